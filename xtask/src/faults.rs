//! `cargo xtask faults [--kills N] [--seed S]`: fault injection on real training runs of the
//! release `vit` binary (the embedded default recipe, cut short).
//!
//! 1. A straight run, never interrupted: the reference.
//! 2. The same run killed with SIGKILL N times, each at a moment of the process's life drawn
//!    from a seeded generator over the straight run's duration (during start-up, a step,
//!    validation or a save alike), and resumed (started afresh when it died before its first
//!    save), in chains that each end when a process lives to the end: every chain must end
//!    with the same `last.safetensors` tensors (model and optimizer, byte for byte) and the
//!    same `metrics.jsonl` (all but the timings) as the straight run.
//! 3. The same with SIGTERM once: the run must save, exit 143, and resume to the same end.
//! 4. A full disk during a save (a tmpfs too small for the second save; root only): the run
//!    must fail with an error, leave the previous state resumable, and, moved to a disk with
//!    room, resume to the same end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Options {
    kills: usize,
    seed: u64,
    dir: PathBuf,
}

impl Options {
    pub fn parse(args: &[String], root: &Path) -> Result<Self, String> {
        let mut o = Options { kills: 20, seed: 1, dir: root.join("target/faults") };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
            match a.as_str() {
                "--kills" => o.kills = value("--kills")?.parse().map_err(|e| format!("--kills: {e}"))?,
                "--seed" => o.seed = value("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?,
                "--dir" => o.dir = value("--dir")?.into(),
                other => return Err(format!("faults: unknown option `{other}`")),
            }
        }
        Ok(o)
    }
}

/// The run every scenario repeats: 1,200 embedded images (about 9 steps an epoch), 4 epochs.
const RUN: [&str; 9] =
    ["--device", "cpu", "train", "--quiet", "--recipe", "default", "--limit-train", "1200", "--epochs"];
const EPOCHS: &str = "4";

fn train(vit: &Path, out: &Path, resume: bool) -> Command {
    let mut c = Command::new(vit);
    c.args(RUN).arg(EPOCHS).arg("--out").arg(out).stdout(Stdio::null()).stderr(Stdio::piped());
    if resume {
        c.arg("--resume");
    }
    c
}

pub fn run(vit: &Path, o: &Options) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(&o.dir);
    std::fs::create_dir_all(&o.dir).map_err(|e| format!("{}: {e}", o.dir.display()))?;
    let straight = o.dir.join("straight");
    let started = Instant::now();
    finish(train(vit, &straight, false), "the straight run")?;
    let duration = started.elapsed();
    println!("straight run: {:.1} s", duration.as_secs_f64());
    let reference = Outcome::of(&straight)?;

    // SIGKILL at random moments of each process's life, in chains: a chain starts a fresh run,
    // kills it, resumes it (or starts afresh when it died before its first save), kills
    // again... until a process lives to the end; then it must match the straight run. Chains
    // follow one another until N processes were killed.
    let mut rng = o.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut draw = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    let (mut kills, mut chains, mut moments) = (0, 0, Vec::new());
    while kills < o.kills {
        chains += 1;
        let killed = o.dir.join(format!("killed-{chains}"));
        loop {
            let resume = killed.join("last.safetensors").exists();
            let mut child = train(vit, &killed, resume).spawn().map_err(|e| format!("vit: {e}"))?;
            let at = Duration::from_secs_f64(0.05 + draw() * duration.as_secs_f64());
            std::thread::sleep(at);
            if child.try_wait().map_err(|e| e.to_string())?.is_some() || kills == o.kills {
                let status = child.wait().map_err(|e| e.to_string())?;
                if !status.success() {
                    return Err(format!("chain {chains}: a resumed run failed on its own: {status}"));
                }
                break;
            }
            child.kill().map_err(|e| format!("kill: {e}"))?;
            child.wait().map_err(|e| e.to_string())?;
            kills += 1;
            moments.push(format!("{:.2}", at.as_secs_f64()));
        }
        reference.same_as(&Outcome::of(&killed)?, &format!("killed chain {chains}"))?;
    }
    println!(
        "SIGKILL {kills} times, in {chains} chains of resumed runs (at {} s of each process): every chain ended \
         bit-identical to the straight run",
        moments.join(", ")
    );

    // SIGTERM once, mid-run.
    let term = o.dir.join("sigterm");
    let child = train(vit, &term, false).spawn().map_err(|e| format!("vit: {e}"))?;
    std::thread::sleep(duration / 3);
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().map_err(|e| format!("kill: {e}"))?;
    let status = child.wait_with_output().map_err(|e| e.to_string())?.status;
    if !sent.success() || status.code() != Some(143) {
        return Err(format!("SIGTERM: the run exited with {status}, expected 143 after saving"));
    }
    finish(train(vit, &term, true), "the run after SIGTERM")?;
    reference.same_as(&Outcome::of(&term)?, "SIGTERM and resumed")?;
    println!("SIGTERM at {:.2} s: exit 143, resumed: bit-identical to the straight run", (duration / 3).as_secs_f64());

    disk_full(vit, o, &reference)
}

/// A tmpfs with room for the first save but not for the second.
fn disk_full(vit: &Path, o: &Options, reference: &Outcome) -> Result<(), String> {
    let mount = o.dir.join("tmpfs");
    std::fs::create_dir_all(&mount).map_err(|e| e.to_string())?;
    let last = reference.bytes.values().map(Vec::len).sum::<usize>();
    let size = format!("size={}k", (last * 3 / 2 + 300_000) / 1024);
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", &size, "tmpfs"]).arg(&mount).status();
    if !mounted.is_ok_and(|s| s.success()) {
        println!("full disk: skipped (mounting a tmpfs needs root)");
        return Ok(());
    }
    let result = (|| {
        let run = mount.join("run");
        let out = train(vit, &run, false).output().map_err(|e| e.to_string())?;
        let log = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !log.contains("No space left") {
            return Err(format!("full disk: expected a failed save, got {} with:\n{log}", out.status));
        }
        let saved = Outcome::epochs_of(&run)?;
        let moved = o.dir.join("disk-full");
        let copied = Command::new("cp").arg("-r").arg(&run).arg(&moved).status().map_err(|e| e.to_string())?;
        if !copied.success() {
            return Err("full disk: copying the run off the tmpfs failed".into());
        }
        finish(train(vit, &moved, true), "the run moved off the full disk")?;
        reference.same_as(&Outcome::of(&moved)?, "after a full disk")?;
        println!(
            "full disk ({size}): the save failed with ENOSPC after {saved} epochs, the previous state resumed: \
             bit-identical to the straight run"
        );
        Ok(())
    })();
    let _ = Command::new("umount").arg(&mount).status();
    result
}

fn finish(mut command: Command, what: &str) -> Result<(), String> {
    let out = command.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr)))
    }
}

/// What a finished run left: the tensors of `last.safetensors` and `metrics.jsonl` without
/// its timings.
struct Outcome {
    bytes: BTreeMap<String, Vec<u8>>,
    metrics: Vec<String>,
}

impl Outcome {
    fn of(run: &Path) -> Result<Self, String> {
        let bytes = tensor_bytes(&run.join("last.safetensors"))?;
        let text = std::fs::read_to_string(run.join("metrics.jsonl")).map_err(|e| format!("{}: {e}", run.display()))?;
        let metrics = text.lines().map(without_timings).collect();
        Ok(Self { bytes, metrics })
    }

    fn epochs_of(run: &Path) -> Result<usize, String> {
        let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
        Ok(text.lines().count())
    }

    fn same_as(&self, other: &Self, what: &str) -> Result<(), String> {
        if self.metrics != other.metrics {
            return Err(format!("{what}: metrics.jsonl differs:\n{:?}\n{:?}", self.metrics, other.metrics));
        }
        if self.bytes.keys().ne(other.bytes.keys()) {
            return Err(format!("{what}: last.safetensors holds other tensors"));
        }
        for (name, bytes) in &self.bytes {
            if other.bytes[name] != *bytes {
                return Err(format!("{what}: tensor `{name}` differs from the straight run's"));
            }
        }
        Ok(())
    }
}

/// A `metrics.jsonl` line without `train_seconds` and `images_per_second`.
fn without_timings(line: &str) -> String {
    line.trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .filter(|field| !field.starts_with("\"train_seconds\"") && !field.starts_with("\"images_per_second\""))
        .collect::<Vec<_>>()
        .join(",")
}

/// The raw bytes of each tensor of a safetensors file, by name (the header is JSON: its
/// entries are read with a scanner for what safetensors writes, names without escapes).
fn tensor_bytes(path: &Path) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bad = || format!("{}: not a safetensors file this scanner reads", path.display());
    let n = u64::from_le_bytes(bytes.get(..8).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
    let header = std::str::from_utf8(bytes.get(8..8 + n).ok_or_else(bad)?).map_err(|_| bad())?;
    let data = &bytes[8 + n..];
    let mut out = BTreeMap::new();
    let mut rest = header;
    while let Some(at) = rest.find("\"data_offsets\":[") {
        let before = &rest[..at];
        let name_end = before.rfind("\":{").ok_or_else(bad)?;
        let name_start = before[..name_end].rfind('"').ok_or_else(bad)? + 1;
        let name = &before[name_start..name_end];
        let after = &rest[at + "\"data_offsets\":[".len()..];
        let close = after.find(']').ok_or_else(bad)?;
        let offsets: Vec<usize> =
            after[..close].split(',').map(|v| v.trim().parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
        let [from, to] = offsets[..] else { return Err(bad()) };
        out.insert(name.to_string(), data.get(from..to).ok_or_else(bad)?.to_vec());
        rest = &after[close..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scanner_reads_tensors_and_the_metrics_filter_drops_only_timings() {
        let header = r#"{"__metadata__":{"k":"v"},"a.b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"c":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend(header.as_bytes());
        file.extend((0u8..12).collect::<Vec<_>>());
        let path = std::env::temp_dir().join(format!("xtask-faults-{}.safetensors", std::process::id()));
        std::fs::write(&path, &file).unwrap();
        let tensors = tensor_bytes(&path).unwrap();
        assert_eq!(tensors["a.b"], [0, 1, 2, 3]);
        assert_eq!(tensors["c"], (4u8..12).collect::<Vec<_>>());
        std::fs::remove_file(path).unwrap();
        let line = r#"{"epoch":1,"train_loss":0.5,"train_seconds":1.25,"images_per_second":100.0,"val_top1":null}"#;
        assert_eq!(without_timings(line), r#""epoch":1,"train_loss":0.5,"val_top1":null"#);
    }
}
