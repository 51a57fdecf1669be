//! `p2pctl create PATH [-o OUT.desc] [--piece-size SIZE] [--bootstrap ADDR]...`

use std::io::{IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use p2pd::descriptor::{self, NodeAddr, create};
use p2pd::units::{ByteSize, human_bytes};

use crate::exit::{CtlError, CtlResult, Exit};

pub fn run(path: &Path, output: Option<PathBuf>, piece_size: Option<String>, bootstrap: Vec<String>) -> CtlResult {
    let bootstrap = bootstrap
        .iter()
        .map(|a| a.parse::<NodeAddr>().map_err(|e| CtlError::new(Exit::Usage, format!("--bootstrap: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let plan = create::plan(path).map_err(|e| CtlError::failed(e.to_string()))?;
    let piece_length = match piece_size {
        Some(text) => {
            let size: ByteSize = text.parse().map_err(|e| CtlError::new(Exit::Usage, format!("--piece-size: {e}")))?;
            create::check_piece_length(size.0, plan.total_length)
                .map_err(|e| CtlError::new(Exit::Usage, e.to_string()))?;
            size.0
        }
        None => descriptor::default_piece_length(plan.total_length),
    };

    let bar = if std::io::stdout().is_terminal() {
        let bar = ProgressBar::new(plan.total_length);
        bar.set_style(
            ProgressStyle::with_template("hashing {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let started = Instant::now();
    let pieces = create::hash_pieces(&plan, piece_length, &mut |done| {
        if let Some(bar) = &bar {
            bar.set_position(done);
        }
    })
    .map_err(|e| CtlError::failed(e.to_string()))?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let desc = create::build(&plan, piece_length, pieces, bootstrap).map_err(|e| CtlError::failed(e.to_string()))?;
    let yaml = desc.to_yaml();

    let output = output.unwrap_or_else(|| PathBuf::from(format!("{}.desc", desc.content.name)));
    if output == Path::new("-") {
        std::io::stdout().write_all(yaml.as_bytes()).map_err(|e| CtlError::failed(format!("stdout: {e}")))?;
    } else {
        write_file(&output, yaml.as_bytes())?;
        let rate = plan.total_length as f64 / elapsed.max(1e-6) / (1 << 20) as f64;
        let executable = desc.content.files.iter().filter(|f| f.executable).count();
        let mut extras = String::new();
        if executable > 0 {
            extras.push_str(&format!(", {executable} executable"));
        }
        if !desc.content.empty_dirs.is_empty() {
            extras.push_str(&format!(", {} empty directories", desc.content.empty_dirs.len()));
        }
        println!(
            "{}: {} ({}, {} files{extras}, {} pieces of {}), hashed at {rate:.0} MiB/s",
            output.display(),
            desc.content.name,
            human_bytes(desc.content.total_length),
            desc.content.files.len(),
            desc.content.pieces.len(),
            human_bytes(piece_length),
        );
        println!("info hash {}", desc.info_hash);
    }
    Ok(Exit::Ok)
}

/// Writes via a temporary file and a rename, so a reader never sees half a descriptor. The
/// temporary file is created exclusively (`O_EXCL`, a random name) in the output's directory:
/// nothing planted under a guessable name there can redirect the write.
fn write_file(path: &Path, bytes: &[u8]) -> CtlResult<()> {
    let err = |e: std::io::Error| CtlError::failed(format!("{}: {e}", path.display()));
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // 0644 before the umask, like any file a user creates (tempfile's default is 0600).
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    // On failure the temporary file is removed when `tmp`, returned inside the error, drops.
    tmp.persist(path).map_err(|e| err(e.error))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| CtlError::failed(format!("{}: {e}", dir.display())))
}
