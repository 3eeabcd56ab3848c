//! Where each output goes, the checks made before any work, and writing through a temporary
//! file that is renamed over the output only on success.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

use crate::formats::Format;

/// One file to write for an input.
#[derive(Debug, Clone)]
pub struct Output {
    pub path: PathBuf,
    pub format: Format,
}

/// Temporary files not yet renamed, removed by a second Ctrl-C that ends at once.
static PENDING: LazyLock<Mutex<Vec<PathBuf>>> = LazyLock::new(Default::default);

pub fn remove_pending() {
    for path in PENDING.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        let _ = std::fs::remove_file(path);
    }
}

/// The outputs of `input`: `<stem>.<ext>` in `dir` for each format.
pub fn outputs_in(dir: &Path, input: &Path, formats: &[Format]) -> Vec<Output> {
    let stem = input.file_stem().unwrap_or(input.as_os_str());
    formats
        .iter()
        .map(|&format| {
            let mut name = stem.to_os_string();
            name.push(".");
            name.push(format.extension());
            Output {
                path: dir.join(name),
                format,
            }
        })
        .collect()
}

/// Makes `dir` if needed and checks that files can be created in it.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    if dir.exists() && !dir.is_dir() {
        return Err(format!("output directory '{}' is not a directory", dir.display()));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create output directory '{}': {e}", dir.display()))?;
    tempfile::Builder::new()
        .prefix(".npuwhisper-check")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| format!("cannot write in '{}': {e}", dir.display()))
}

/// Refuses an output that is a directory, is one of the inputs (any spelling: same file), or
/// is written by two inputs.
pub fn check_outputs(plan: &[(PathBuf, Vec<Output>)]) -> Result<(), String> {
    let mut writers: HashMap<PathBuf, &Path> = HashMap::new();
    for (input, outputs) in plan {
        for out in outputs {
            let path = &out.path;
            if path.is_dir() {
                return Err(format!("output '{}' is a directory", path.display()));
            }
            for (other, _) in plan {
                if same_file::is_same_file(other, path).unwrap_or(false) {
                    return Err(format!(
                        "output '{}' is the input '{}': refusing to overwrite it",
                        path.display(),
                        other.display()
                    ));
                }
            }
            let key = normalized(path);
            if let Some(first) = writers.insert(key, input) {
                return Err(format!(
                    "'{}' and '{}' would both be written to '{}' (use --output-dir or rename one)",
                    first.display(),
                    input.display(),
                    path.display()
                ));
            }
        }
    }
    Ok(())
}

/// An absolute path with `.` and `..` resolved through the directory, for comparing outputs
/// that do not exist yet.
fn normalized(path: &Path) -> PathBuf {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match (dir.canonicalize(), path.file_name()) {
        (Ok(d), Some(name)) => d.join(name),
        _ => path.to_path_buf(),
    }
}

/// A temporary file beside an output, renamed over it by [`Pending::commit`], removed if dropped.
pub struct Pending {
    file: Option<tempfile::NamedTempFile>,
    target: PathBuf,
}

impl Pending {
    pub fn create(target: &Path) -> std::io::Result<Pending> {
        let dir = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut prefix = std::ffi::OsString::from(".");
        prefix.push(target.file_name().unwrap_or_default());
        prefix.push(".");
        let file = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".part")
            .tempfile_in(dir)?;
        PENDING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(file.path().to_path_buf());
        Ok(Pending {
            file: Some(file),
            target: target.to_path_buf(),
        })
    }

    /// Writes `contents` and renames the file over the target, with the usual permissions.
    pub fn commit(mut self, contents: &str, mode: u32) -> std::io::Result<()> {
        let mut file = self.file.take().expect("committed once");
        let tmp = file.path().to_path_buf();
        file.write_all(contents.as_bytes())?;
        file.as_file().sync_all()?;
        use std::os::unix::fs::PermissionsExt;
        file.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
        let result = file.persist(&self.target).map(drop).map_err(|e| e.error);
        forget_pending(&tmp);
        result
    }
}

fn forget_pending(path: &Path) {
    PENDING.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| p != path);
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            let path = file.path().to_path_buf();
            drop(file); // removes it
            forget_pending(&path);
        }
    }
}
