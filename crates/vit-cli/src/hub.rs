//! Models from the Hugging Face hub, for users who are online: `vit import hf://ORG/NAME`
//! (optionally `@REVISION`) fetches what an import needs and checks it.
//!
//! The model's file list comes from the hub's API (`/api/models/REPO/revision/REV?blobs=true`),
//! which names the commit and gives each file's size, its git blob id and, for large (LFS)
//! files, its sha256. Files are fetched from that commit with the system's `curl` (no HTTP or
//! TLS stack in the binary); every file's size is checked and every LFS file's sha256, and a
//! file that does not match is removed. The endpoint is `https://huggingface.co`, or
//! `$VIT_HUB_ENDPOINT` (else `$HF_ENDPOINT`): a mirror, or a `file://` directory laid out as the
//! hub is (the tests use one). Tests never go online.
//!
//! The cache is the one Python's `huggingface_hub` keeps, in its layout: `--cache DIR`, else
//! `$HF_HUB_CACHE`, `$HF_HOME/hub`, `$XDG_CACHE_HOME/huggingface/hub` or
//! `~/.cache/huggingface/hub`, holding `models--ORG--NAME/blobs/<etag>` (the sha256 of an LFS
//! file, the git blob id of another), `snapshots/<commit>/<file>` (a relative link to its blob)
//! and `refs/<revision>` (the commit). A model `huggingface_hub` fetched is found there and
//! not fetched again (after the same checks), and one fetched here is found by
//! `huggingface_hub`. Offline, a revision the cache knows is imported from it, said so.
//!
//! Why not the `hf-hub` crate: its 1.0 does not check what it downloads against the hub's
//! checksums (this does, for every file), reads no `file://` mirror, and would bring an async
//! runtime, an HTTP and TLS stack (rustls over aws-lc, built from C) and the Xet storage
//! client, some 600 lines of `cargo tree`, into a binary that has no network code today.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest, Sha256};

/// `hf://ORG/NAME` or `hf://ORG/NAME@REVISION` as `(repo, revision)`; `None` for anything
/// else (a local path). A malformed name is an error naming what is wrong.
pub fn parse_source(source: &str) -> Result<Option<(String, String)>> {
    let Some(rest) = source.strip_prefix("hf://") else { return Ok(None) };
    let (repo, revision) = rest.split_once('@').unwrap_or((rest, "main"));
    let part_ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match repo.split_once('/') {
        Some((org, name)) if part_ok(org) && part_ok(name) => {}
        _ => {
            bail!("{source}: expected hf://ORG/NAME[@REVISION], with letters, digits, '-', '_' and '.' in ORG and NAME")
        }
    }
    if revision.is_empty()
        || revision.contains("..")
        || !revision.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
    {
        bail!("{source}: the revision `{revision}` is not a branch, tag or commit name");
    }
    Ok(Some((repo.to_string(), revision.to_string())))
}

/// The hub to talk to.
fn endpoint() -> Result<String> {
    let endpoint = std::env::var("VIT_HUB_ENDPOINT")
        .or_else(|_| std::env::var("HF_ENDPOINT"))
        .unwrap_or_else(|_| "https://huggingface.co".to_string());
    if !(endpoint.starts_with("https://") || endpoint.starts_with("file://")) {
        bail!("VIT_HUB_ENDPOINT / HF_ENDPOINT `{endpoint}`: expected an https:// or file:// address");
    }
    Ok(endpoint.trim_end_matches('/').to_string())
}

/// One file of the model as the API lists it.
#[derive(Debug, Clone, PartialEq)]
struct RemoteFile {
    name: String,
    size: Option<u64>,
    sha256: Option<String>,
    /// The git blob id (`blobId`), which names a file that is not in LFS in the cache.
    blob_id: Option<String>,
}

impl RemoteFile {
    /// The name of its blob in the cache, as `huggingface_hub` names it (the file's etag):
    /// the sha256 of an LFS file, the git blob id of another.
    fn etag(&self) -> Option<&str> {
        self.sha256.as_deref().or(self.blob_id.as_deref())
    }
}

/// The commit and files of the API's answer.
fn parse_listing(json: &str, what: &str) -> Result<(String, Vec<RemoteFile>)> {
    let value: serde_json::Value = serde_json::from_str(json).with_context(|| format!("{what}: not JSON"))?;
    let sha = value.get("sha").and_then(|s| s.as_str()).ok_or_else(|| anyhow!("{what}: no `sha` (commit)"))?;
    if sha.is_empty() || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("{what}: the commit `{sha}` is not a hexadecimal id");
    }
    let siblings =
        value.get("siblings").and_then(|s| s.as_array()).ok_or_else(|| anyhow!("{what}: no `siblings` list"))?;
    let mut files = Vec::new();
    for s in siblings {
        let name = s
            .get("rfilename")
            .and_then(|n| n.as_str())
            .ok_or_else(|| anyhow!("{what}: a sibling without `rfilename`"))?;
        let lfs = s.get("lfs");
        let size = lfs.and_then(|l| l.get("size")).or_else(|| s.get("size")).and_then(|v| v.as_u64());
        let hex = |v: &serde_json::Value| {
            v.as_str()
                .filter(|h| !h.is_empty() && h.len() <= 128 && h.chars().all(|c| c.is_ascii_hexdigit()))
                .map(str::to_ascii_lowercase)
        };
        let sha256 = lfs.and_then(|l| l.get("sha256")).and_then(hex);
        let blob_id = s.get("blobId").and_then(hex);
        files.push(RemoteFile { name: name.to_string(), size, sha256, blob_id });
    }
    Ok((sha.to_string(), files))
}

/// The files an import reads, of those listed: `config.json`, the preprocessor's when there is
/// one, and the weights: `model.safetensors`, or its index and every shard the index names, or
/// `pytorch_model.bin`.
fn wanted(files: &[RemoteFile]) -> Result<Vec<&RemoteFile>> {
    let find = |name: &str| files.iter().find(|f| f.name == name);
    let config = find("config.json").ok_or_else(|| anyhow!("the model has no config.json"))?;
    let mut out = vec![config];
    out.extend(find("preprocessor_config.json"));
    if let Some(weights) = find("model.safetensors") {
        out.push(weights);
    } else if let Some(index) = find("model.safetensors.index.json") {
        out.push(index);
        out.extend(files.iter().filter(|f| f.name.starts_with("model-") && f.name.ends_with(".safetensors")));
    } else if let Some(pickle) = find("pytorch_model.bin") {
        out.push(pickle);
    } else {
        bail!("the model has no model.safetensors, model.safetensors.index.json or pytorch_model.bin");
    }
    if let Some(bad) = out.iter().find(|f| f.name.contains('/') || f.name.starts_with('.')) {
        bail!("the listed file `{}` is not a plain file name", bad.name);
    }
    Ok(out)
}

fn curl(url: &str, to: &Path) -> Result<()> {
    let status = Command::new("curl")
        .args(["-fsSL", "--retry", "3", "-o"])
        .arg(to)
        .arg(url)
        .status()
        .context("running curl (install it to download models)")?;
    if !status.success() {
        bail!("curl {url} failed ({status}); offline, download the model elsewhere and import its directory");
    }
    Ok(())
}

/// Whether `path` is `file` as listed: its size, and its sha256 when the hub gives one.
fn check(path: &Path, file: &RemoteFile) -> Result<std::result::Result<(), String>> {
    let reading = || format!("reading {}", path.display());
    let len = std::fs::metadata(path).with_context(reading)?.len();
    if let Some(size) = file.size.filter(|&s| s != len) {
        return Ok(Err(format!("{len} bytes, the hub lists {size}")));
    }
    if let Some(want) = &file.sha256 {
        // Streamed through the hash: weights of many GB are never held in memory.
        let mut hasher = Sha256::new();
        std::io::copy(&mut std::fs::File::open(path).with_context(reading)?, &mut hasher).with_context(reading)?;
        let got: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if &got != want {
            return Ok(Err(format!("sha256 {got}, the hub lists {want}")));
        }
    }
    Ok(Ok(()))
}

/// One model's folder in the cache: `models--ORG--NAME`.
struct CachedModel {
    root: PathBuf,
}

impl CachedModel {
    fn new(cache: &Path, repo: &str) -> Self {
        Self { root: cache.join(format!("models--{}", repo.replace('/', "--"))) }
    }

    fn snapshot(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    fn blob(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(etag)
    }

    /// The commit `refs/<revision>` names, if the cache knows the revision.
    fn commit_of(&self, revision: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.root.join("refs").join(revision)).ok()?;
        let commit = text.trim();
        (!commit.is_empty() && commit.chars().all(|c| c.is_ascii_hexdigit())).then(|| commit.to_string())
    }

    /// Records that `revision` is `commit` (a new file renamed over the old).
    fn set_ref(&self, revision: &str, commit: &str) -> Result<()> {
        if revision == commit {
            return Ok(());
        }
        let path = self.root.join("refs").join(revision);
        let dir = path.parent().expect("refs/<revision> has a parent");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let partial = dir.join(format!(".{}.{}", path.file_name().unwrap().to_string_lossy(), std::process::id()));
        std::fs::write(&partial, commit).with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))
    }

    /// Puts the checked file at `partial` in the cache: as its blob, linked from the snapshot.
    fn store(&self, partial: &Path, file: &RemoteFile, commit: &str) -> Result<()> {
        let link = self.snapshot(commit).join(&file.name);
        let _ = std::fs::remove_file(&link);
        match file.etag() {
            Some(etag) => {
                let blob = self.blob(etag);
                std::fs::rename(partial, &blob).with_context(|| format!("writing {}", blob.display()))?;
                link_to_blob(&blob, &link, etag)
            }
            // Without an etag there is no blob name: the snapshot holds the file itself.
            None => std::fs::rename(partial, &link).with_context(|| format!("writing {}", link.display())),
        }
    }
}

/// `link` (in `snapshots/<commit>/`) pointing at `blob` as `huggingface_hub` makes it: a
/// relative link `../../blobs/<etag>`; a copy where links cannot be made.
fn link_to_blob(blob: &Path, link: &Path, etag: &str) -> Result<()> {
    #[cfg(unix)]
    {
        let _ = blob;
        std::os::unix::fs::symlink(Path::new("../../blobs").join(etag), link)
            .with_context(|| format!("linking {}", link.display()))
    }
    #[cfg(not(unix))]
    {
        let _ = etag;
        std::fs::copy(blob, link).map(|_| ()).with_context(|| format!("writing {}", link.display()))
    }
}

/// Fetches `repo` at `revision` into the hub cache `cache` and returns the snapshot folder to
/// import. Files already there (fetched by this or by `huggingface_hub`) and matching the
/// listing are not fetched again.
pub fn fetch(repo: &str, revision: &str, cache: &Path) -> Result<PathBuf> {
    let endpoint = endpoint()?;
    let model = CachedModel::new(cache, repo);
    let listing_url = format!("{endpoint}/api/models/{repo}/revision/{revision}?blobs=true");
    let staging = model.root.join("blobs");
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let listing = staging.join(format!(".listing.{}", std::process::id()));
    let fetched = curl(&listing_url, &listing);
    let text = std::fs::read_to_string(&listing);
    let _ = std::fs::remove_file(&listing);
    let text = match (fetched, text) {
        (Ok(()), Ok(text)) => text,
        (Err(offline), _) => return cached_offline(&model, repo, revision, offline),
        (Ok(()), Err(e)) => return Err(e).with_context(|| format!("reading the listing of {listing_url}")),
    };
    let (commit, files) = parse_listing(&text, &listing_url)?;
    let snapshot = model.snapshot(&commit);
    std::fs::create_dir_all(&snapshot).with_context(|| format!("creating {}", snapshot.display()))?;
    for file in wanted(&files)? {
        let path = snapshot.join(&file.name);
        if path.exists() && check(&path, file)?.is_ok() {
            continue;
        }
        let url = format!("{endpoint}/{repo}/resolve/{commit}/{}", file.name);
        eprintln!("downloading {url}");
        let partial = staging.join(format!("{}.incomplete", file.etag().unwrap_or(&file.name)));
        curl(&url, &partial)?;
        if let Err(why) = check(&partial, file)? {
            let _ = std::fs::remove_file(&partial);
            bail!("{url}: {why}; removed");
        }
        model.store(&partial, file, &commit)?;
    }
    model.set_ref(revision, &commit)?;
    Ok(snapshot)
}

/// The snapshot of `revision` the cache already holds, when the hub cannot be reached: what
/// `huggingface_hub` does offline. The files are not checked again (there is no listing).
fn cached_offline(model: &CachedModel, repo: &str, revision: &str, offline: anyhow::Error) -> Result<PathBuf> {
    let commit = model.commit_of(revision).or_else(|| {
        let is_commit = revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit());
        is_commit.then(|| revision.to_string())
    });
    let snapshot = commit.as_ref().map(|c| model.snapshot(c)).filter(|s| s.join("config.json").is_file());
    match snapshot {
        Some(snapshot) => {
            eprintln!(
                "the hub cannot be reached ({offline}); using {repo}@{revision} from the cache: {}",
                snapshot.display()
            );
            Ok(snapshot)
        }
        None => Err(offline.context(format!(
            "{repo}@{revision}: the hub gave no listing (offline, or no such model or revision), and it is not in \
             the cache {}",
            model.root.display()
        ))),
    }
}

/// The hub cache `huggingface_hub` uses: `$HF_HUB_CACHE` (or its old name
/// `$HUGGINGFACE_HUB_CACHE`), else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
/// `$HOME/.cache/huggingface/hub`.
pub fn default_cache() -> Result<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
        return Ok(dir);
    }
    if let Some(home) = var("HF_HOME") {
        return Ok(home.join("hub"));
    }
    let cache = var("XDG_CACHE_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".cache")))
        .ok_or_else(|| anyhow!("none of HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME, HOME is set: pass --cache DIR"))?;
    Ok(cache.join("huggingface").join("hub"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_name_a_repository_and_a_revision() {
        assert_eq!(parse_source("dir/model").unwrap(), None);
        assert_eq!(
            parse_source("hf://timm/vit_small_patch16_224.augreg_in21k").unwrap(),
            Some(("timm/vit_small_patch16_224.augreg_in21k".into(), "main".into()))
        );
        assert_eq!(parse_source("hf://google/vit-base-patch16-224@v1.0").unwrap().unwrap().1, "v1.0");
        for bad in ["hf://nothing", "hf://a/b/c", "hf://../x", "hf://a/b@../../etc", "hf://a/b@", "hf://a b/c"] {
            assert!(parse_source(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_listing_gives_the_commit_sizes_and_lfs_checksums() {
        let json = r#"{"sha": "abc123", "siblings": [
            {"rfilename": "config.json", "size": 10},
            {"rfilename": "model.safetensors", "size": 99, "lfs": {"sha256": "ABCD", "size": 100}},
            {"rfilename": "README.md"}
        ]}"#;
        let (commit, files) = parse_listing(json, "test").unwrap();
        assert_eq!(commit, "abc123");
        assert_eq!(
            files[1],
            RemoteFile {
                name: "model.safetensors".into(),
                size: Some(100),
                sha256: Some("abcd".into()),
                blob_id: None
            }
        );
        let names: Vec<&str> = wanted(&files).unwrap().iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["config.json", "model.safetensors"]);
        assert!(parse_listing(r#"{"sha": "../x", "siblings": []}"#, "t").is_err());
        let none = parse_listing(r#"{"sha": "ab", "siblings": [{"rfilename": "config.json"}]}"#, "t").unwrap().1;
        assert!(wanted(&none).unwrap_err().to_string().contains("no model.safetensors"));
    }
}
