//! Models from the Hugging Face hub, for users who are online: `vit import hf://ORG/NAME`
//! (optionally `@REVISION`) fetches what an import needs and checks it.
//!
//! The model's file list comes from the hub's API (`/api/models/REPO/revision/REV?blobs=true`),
//! which names the commit and gives each file's size and, for large (LFS) files, its sha256.
//! Files are fetched from that commit with the system's `curl` (no HTTP or TLS stack in the
//! binary) into `CACHE/hub/ORG--NAME/COMMIT/`; every file's size is checked and every LFS
//! file's sha256, and a file that does not match is removed. The endpoint is
//! `https://huggingface.co`, or `$VIT_HUB_ENDPOINT` (else `$HF_ENDPOINT`): a mirror, or a
//! `file://` directory laid out as the hub is (the tests use one). Tests never go online.

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
        let sha256 = lfs.and_then(|l| l.get("sha256")).and_then(|v| v.as_str()).map(str::to_ascii_lowercase);
        files.push(RemoteFile { name: name.to_string(), size, sha256 });
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

/// Fetches `repo` at `revision` into `cache` and returns the directory to import. Files
/// already there and matching the listing are not fetched again.
pub fn fetch(repo: &str, revision: &str, cache: &Path) -> Result<PathBuf> {
    let endpoint = endpoint()?;
    let listing_url = format!("{endpoint}/api/models/{repo}/revision/{revision}?blobs=true");
    let staging = cache.join("hub").join(".listings");
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let listing = staging.join(format!("{}-{}.json", repo.replace('/', "--"), std::process::id()));
    curl(&listing_url, &listing)?;
    let text = std::fs::read_to_string(&listing).with_context(|| format!("reading {}", listing.display()))?;
    let _ = std::fs::remove_file(&listing);
    let (commit, files) = parse_listing(&text, &listing_url)?;
    let dir = cache.join("hub").join(repo.replace('/', "--")).join(&commit);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for file in wanted(&files)? {
        let path = dir.join(&file.name);
        if path.exists() && check(&path, file)?.is_ok() {
            continue;
        }
        let url = format!("{endpoint}/{repo}/resolve/{commit}/{}", file.name);
        eprintln!("downloading {url}");
        let partial = dir.join(format!(".{}.part", file.name));
        curl(&url, &partial)?;
        if let Err(why) = check(&partial, file)? {
            let _ = std::fs::remove_file(&partial);
            bail!("{url}: {why}; removed");
        }
        std::fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir)
}

/// Where models are cached: `$VIT_CACHE_DIR`, else `$HOME/.cache/vit-rs`.
pub fn default_cache() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("VIT_CACHE_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let home =
        std::env::var_os("HOME").ok_or_else(|| anyhow!("neither VIT_CACHE_DIR nor HOME is set: pass --cache DIR"))?;
    Ok(PathBuf::from(home).join(".cache").join("vit-rs"))
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
            RemoteFile { name: "model.safetensors".into(), size: Some(100), sha256: Some("abcd".into()) }
        );
        let names: Vec<&str> = wanted(&files).unwrap().iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["config.json", "model.safetensors"]);
        assert!(parse_listing(r#"{"sha": "../x", "siblings": []}"#, "t").is_err());
        let none = parse_listing(r#"{"sha": "ab", "siblings": [{"rfilename": "config.json"}]}"#, "t").unwrap().1;
        assert!(wanted(&none).unwrap_err().to_string().contains("no model.safetensors"));
    }
}
