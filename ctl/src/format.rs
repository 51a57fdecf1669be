//! Human output: sizes, rates, durations and aligned tables.

use p2pd::units::human_bytes;

/// `12.5 MiB/s`, or `-` for nothing.
pub fn rate(bytes_per_sec: u64) -> String {
    if bytes_per_sec == 0 { "-".into() } else { format!("{}/s", human_bytes(bytes_per_sec)) }
}

pub fn size(bytes: u64) -> String {
    human_bytes(bytes)
}

/// `2h03m`, `4m10s`, `12s`.
pub fn duration(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
        _ => format!("{}d{:02}h", secs / 86_400, (secs % 86_400) / 3600),
    }
}

/// `42.0%`.
pub fn percent(done: u64, total: u64) -> String {
    if total == 0 {
        return "-".into();
    }
    let p = done as f64 * 100.0 / total as f64;
    // Never show 100.0% for an incomplete torrent.
    if done < total && p >= 99.95 { "99.9%".into() } else { format!("{p:.1}%") }
}

/// Column alignment.
#[derive(Clone, Copy)]
pub enum Align {
    Left,
    Right,
}

/// Prints rows under headers, each column as wide as its widest cell.
pub fn table(headers: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|(h, _)| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w.saturating_sub(cell.chars().count());
            let last = i + 1 == cells.len();
            match headers[i].1 {
                Align::Left if last => out.push_str(cell),
                Align::Left => {
                    out.push_str(cell);
                    out.push_str(&" ".repeat(pad));
                }
                Align::Right => {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(cell);
                }
            }
            if !last {
                out.push_str("  ");
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.iter().map(|(h, _)| *h).collect());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &[("NAME", Align::Left), ("SIZE", Align::Right)],
            &[vec!["a".into(), "1 B".into()], vec!["long-name".into(), "10 KiB".into()]],
        );
        assert_eq!(t, "NAME         SIZE\na             1 B\nlong-name  10 KiB\n");
    }

    #[test]
    fn human_values() {
        assert_eq!(duration(3725), "1h02m");
        assert_eq!(percent(999_999, 1_000_000), "99.9%");
        assert_eq!(percent(5, 10), "50.0%");
        assert_eq!(rate(0), "-");
    }
}
