//! Printing: stdout writes that report errors instead of panicking (a closed pipe is normal
//! for `kes key ls | head`), timestamps, and the flags that select the format.

use clap::{Args, ValueEnum};
use kes_types::GoTime;
use serde::Serialize;
use std::io::{IsTerminal, Write};

/// Writes a line to stdout.
macro_rules! outln {
    () => {
        $crate::output::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

pub fn write_out(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)?;
    out.flush()?;
    Ok(())
}

/// Prints a value as one line of JSON.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string(value)?;
    outln!("{text}")
}

/// When to use colors; accepted for compatibility with KES. Output is plain either way, so
/// it never depends on the terminal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Color {
    #[default]
    Auto,
    Never,
    Always,
}

/// `--json` and `--color`.
#[derive(Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
    /// When to use colors (accepted for compatibility; output is plain)
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = Color::Auto, hide = true)]
    pub color: Color,
}

pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// `2006-01-02 15:04:05` in the timestamp's own offset, as KES prints dates.
pub fn date(t: &GoTime) -> String {
    let t = t.0;
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Prints a list of names, with a heading when a person is reading.
pub fn print_names(heading: &str, names: &[String], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(names);
    }
    if names.is_empty() {
        return Ok(());
    }
    if stdout_is_terminal() {
        outln!("{heading}")?;
    }
    for name in names {
        outln!("{name}")?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn dates_like_kes() {
        let t = GoTime::parse("2024-03-05T07:08:09.123Z").unwrap();
        assert_eq!(date(&t), "2024-03-05 07:08:09");
    }
}
