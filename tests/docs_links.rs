//! Every relative link in the README and in `docs/` points at a file or folder that exists
//! inside the repository (nothing outside it, nothing renamed away).

use std::path::{Component, Path, PathBuf};

/// The targets of the Markdown links `[text](target)` in `text`.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    out
}

/// `path` with `.` and `..` resolved lexically; `None` when it climbs above its start.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("README.md")];
    if let Ok(entries) = std::fs::read_dir(root.join("docs")) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "md") {
                files.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    files
}

#[test]
fn every_relative_link_in_the_docs_resolves_inside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files(root) {
        let text = std::fs::read_to_string(root.join(&file)).unwrap();
        let dir = file.parent().unwrap_or(Path::new(""));
        for target in link_targets(&text) {
            let target = target.split('#').next().unwrap_or("").trim();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            match normalize(&dir.join(target)) {
                Some(p) if root.join(&p).exists() => {}
                Some(p) => broken.push(format!(
                    "{}: {target} ({} does not exist)",
                    file.display(),
                    p.display()
                )),
                None => broken.push(format!(
                    "{}: {target} leaves the repository",
                    file.display()
                )),
            }
        }
    }
    assert!(checked > 0, "no links found: is the README there?");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
