//! What the tests of the `vit` binary share besides the data helpers: the Python interpreter
//! that independent checks run in.

use std::path::PathBuf;
use std::process::Command;

/// An interpreter that imports every module of `modules` (`"onnx, onnxruntime"`):
/// `$VIT_TEST_PYTHON`, else `python3`. `None` where there is none, said on standard error, so
/// that the check is skipped on a developer's machine; under CI (`.ci/run` installs the
/// modules) a missing one fails the test instead.
pub fn test_python(modules: &str) -> Option<PathBuf> {
    let candidate = std::env::var_os("VIT_TEST_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from);
    let works =
        Command::new(&candidate).args(["-c", &format!("import {modules}")]).output().is_ok_and(|o| o.status.success());
    if works {
        return Some(candidate);
    }
    assert!(std::env::var_os("CI").is_none(), "CI must have python with {modules}: .ci/run installs them");
    eprintln!("skipped: no python3 with {modules} (set $VIT_TEST_PYTHON)");
    None
}
