use std::fmt;
use std::path::PathBuf;

/// Why a config file was rejected. Every variant names what was wrong where the file says it;
/// the messages keep KES's `kesconf:` prefix so that operators' log searches keep working.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("kesconf: failed to read '{}': {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Not YAML, or a value of the wrong shape (a list where a string belongs, a repeated
    /// field). The message is the YAML decoder's, with field path and position.
    #[error("kesconf: {message}")]
    Yaml {
        message: String,
        line: Option<usize>,
    },

    /// A `${NAME}` reference to an unset environment variable. The message is KES's own.
    #[error("kesconf: referenced env. variable '{name}' in line '{line}' not found")]
    EnvNotFound { name: String, line: usize },

    /// A required field is absent or empty.
    #[error("kesconf: missing value for '{field}'{}", At(*line))]
    Missing { field: String, line: Option<usize> },

    /// A field's value breaks a rule; `reason` says which.
    #[error("kesconf: invalid value for '{field}': '{value}' ({reason}){}", At(*line))]
    Invalid {
        field: String,
        value: String,
        reason: String,
        line: Option<usize>,
    },

    /// The `keystore` section names no backend.
    #[error("kesconf: no keystore specified")]
    NoKeystore,

    /// The `keystore` section names more than one backend.
    #[error("kesconf: invalid keystore config: more than one keystore specified ({})", names.join(", "))]
    MultipleKeystores { names: Vec<String> },
}

impl ConfigError {
    /// The 1-based line the error points at, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Yaml { line, .. }
            | ConfigError::Missing { line, .. }
            | ConfigError::Invalid { line, .. } => *line,
            ConfigError::EnvNotFound { line, .. } => Some(*line),
            ConfigError::Io { .. }
            | ConfigError::NoKeystore
            | ConfigError::MultipleKeystores { .. } => None,
        }
    }

    /// The dotted path of the offending field, when the error is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Missing { field, .. } | ConfigError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// Renders " at line N", or nothing when the line is unknown.
struct At(Option<usize>);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, " at line {n}"),
            None => Ok(()),
        }
    }
}
