//! Who may use the control socket: root, the daemon's own user, and members of
//! `control_group`. Decided from the kernel's peer credentials (`SO_PEERCRED`) of each
//! connection, never from anything the client sends. The socket file's mode (0660, group
//! `control_group`) is a second fence, not the first.

use nix::unistd::{Gid, Group, Uid, User, getgrouplist};

/// Who is at the other end of a control connection, as the kernel says (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
}

impl Credentials {
    /// Root and the daemon's own user may have content put anywhere (the daemon can write
    /// nowhere they could not already); anyone else only inside `data_roots`.
    pub fn may_use_any_directory(&self) -> bool {
        self.uid == 0 || Uid::from_raw(self.uid) == Uid::effective()
    }

    /// Only root and the daemon's own user may `add --adopt`: adopted content becomes the
    /// torrent's to overwrite, cut and delete, whoever it belonged to.
    pub fn may_adopt(&self) -> bool {
        self.may_use_any_directory()
    }
}

/// Why `control_group` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("control_group: group `{0}` does not exist")]
    Missing(String),
    #[error("control_group: cannot look up group `{name}`: {source}")]
    Lookup { name: String, source: nix::Error },
}

/// Why a client was refused: who it is and who may, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{who} may not control this p2pd: only {trusted}")]
pub struct Refused {
    /// `user NAME (uid N)`, or `uid N`.
    pub who: String,
    /// Who may, and how to admit more.
    pub trusted: String,
}

/// The admission rule in force.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    daemon_uid: Uid,
    group: Option<(String, Gid)>,
}

impl AccessPolicy {
    /// Builds the rule; fails if `group` does not exist.
    pub fn new(group: Option<&str>) -> Result<AccessPolicy, GroupError> {
        let group = match group {
            None => None,
            Some(name) => match Group::from_name(name) {
                Ok(Some(g)) => Some((name.to_string(), g.gid)),
                Ok(None) => return Err(GroupError::Missing(name.to_string())),
                Err(source) => return Err(GroupError::Lookup { name: name.to_string(), source }),
            },
        };
        Ok(AccessPolicy { daemon_uid: Uid::effective(), group })
    }

    /// The configured group's id, for the socket file's ownership.
    pub fn group_gid(&self) -> Option<Gid> {
        self.group.as_ref().map(|(_, gid)| *gid)
    }

    /// Admits or refuses a client with these credentials; a refusal says why, in one line.
    pub fn check(&self, uid: u32, gid: u32) -> Result<(), Refused> {
        let uid = Uid::from_raw(uid);
        if uid.is_root() || uid == self.daemon_uid {
            return Ok(());
        }
        let user = User::from_uid(uid).ok().flatten();
        if let Some((_, group_gid)) = &self.group {
            if Gid::from_raw(gid) == *group_gid {
                return Ok(());
            }
            if let Some(u) = &user
                && let Ok(name) = std::ffi::CString::new(u.name.clone())
                && getgrouplist(&name, u.gid).is_ok_and(|groups| groups.contains(group_gid))
            {
                return Ok(());
            }
        }
        let who = match &user {
            Some(u) => format!("user {} (uid {})", u.name, uid),
            None => format!("uid {uid}"),
        };
        let daemon_user = User::from_uid(self.daemon_uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| format!("uid {}", self.daemon_uid));
        // "root and root" when p2pd itself runs as root.
        let trusted = if self.daemon_uid.is_root() { "root".to_string() } else { format!("root, {daemon_user}") };
        let trusted = match &self.group {
            Some((name, _)) => format!("{trusted} and members of group {name} may"),
            None => {
                format!("{} may (set control_group in p2pd.yaml to admit a group)", trusted.replace(", ", " and "))
            }
        };
        Err(Refused { who, trusted })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_self_are_admitted() {
        let p = AccessPolicy::new(None).unwrap();
        assert!(p.check(0, 0).is_ok());
        assert!(p.check(Uid::effective().as_raw(), 12345).is_ok());
    }

    #[test]
    fn strangers_are_refused_with_a_reason() {
        let p = AccessPolicy::new(None).unwrap();
        let stranger = if Uid::effective().as_raw() == 54321 { 54322 } else { 54321 };
        let e = p.check(stranger, 54321).unwrap_err().to_string();
        assert!(e.contains("may not control this p2pd"), "{e}");
    }

    #[test]
    fn unknown_group_is_an_error() {
        let e = AccessPolicy::new(Some("no-such-group-p2pd-test")).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
    }

    #[test]
    fn group_members_by_primary_gid_are_admitted() {
        let Ok(Some(g)) = Group::from_gid(Gid::from_raw(0)) else { return };
        let p = AccessPolicy::new(Some(&g.name)).unwrap();
        assert!(p.check(54321, 0).is_ok());
    }
}
