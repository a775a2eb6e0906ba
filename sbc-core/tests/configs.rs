//! Every config shipped in `configs/` (and used by the lab in `lab/configs/`) is valid, and every `tests/invalid/NAME.yaml` is rejected
//! with exactly the errors listed in `tests/invalid/NAME.errors` (run with `BLESS=1` to rewrite
//! those files after a deliberate change, then review the diff).

use std::fs;
use std::path::{Path, PathBuf};

/// The `.yaml` and `.yml` files of `dir`, sorted.
fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<_> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML files in {}", dir.display());
    files
}

#[test]
fn every_shipped_config_is_valid() {
    let lab = yaml_files("../lab/configs");
    for path in yaml_files("../configs").into_iter().chain(lab) {
        if let Err(errors) = sbc_core::config::load(&path) {
            let errors: Vec<_> = errors.iter().map(ToString::to_string).collect();
            panic!("{} is invalid:\n{}", path.display(), errors.join("\n"));
        }
    }
}

#[test]
fn invalid_configs_report_every_error_in_place() {
    for path in yaml_files("tests/invalid") {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let text = fs::read_to_string(&path).expect("readable");
        let errors = sbc_core::config::load_str(&name, &text).err().unwrap_or_default();
        let actual: String = errors.iter().map(|e| format!("{e}\n")).collect();
        let expected = path.with_extension("errors");
        if std::env::var_os("BLESS").is_some() {
            fs::write(&expected, &actual).expect("writable");
        }
        let wanted = fs::read_to_string(&expected).unwrap_or_default();
        assert_eq!(actual, wanted, "{name} (expected in {})", expected.display());
    }
}
