//! The YAML file layer: parse, validate with located errors, convert to [`super::Config`].
//! (Being written; signatures are the contract.)

use std::fmt;
use std::path::Path;

use super::Config;

/// One problem in a config file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File name as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&name, &text),
        Err(e) => Err(vec![ConfigError {
            file: name,
            line: 0,
            column: 0,
            message: e.to_string(),
        }]),
    }
}

/// Validates config text; `name` is used in error locations.
pub fn load_str(name: &str, _text: &str) -> Result<Config, Vec<ConfigError>> {
    Err(vec![ConfigError {
        file: name.into(),
        line: 1,
        column: 1,
        message: "not implemented".into(),
    }])
}
