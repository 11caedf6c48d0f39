//! The benchmark's repositories, built at bench time into bare git
//! repositories with `git fast-import` (no work tree, so 100,000 files take
//! seconds): generated ones, seeded and deterministic, with a log-normal size
//! distribution and about 5% binary files; and a real history made of a
//! crate's versions found in the local cargo registry source cache, one
//! commit per version in version order. Writes to disk and runs git.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A bare repository (branch `main`) under a temporary root that a git
/// daemon can export and the GitHub stand-in can read.
pub struct BareRepo {
    _dir: tempfile::TempDir,
    pub name: String,
    /// The directory that holds the repository (the daemon's base path).
    pub root: PathBuf,
    pub commits: Vec<String>,
    clock: u64,
}

/// A change to write in one commit.
pub enum Change {
    Write(String, Vec<u8>),
}

impl BareRepo {
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let root = dir.path().to_path_buf();
        let repo = BareRepo {
            _dir: dir,
            name: name.to_string(),
            root,
            commits: Vec::new(),
            clock: 1_700_000_000,
        };
        repo.git(
            &["init", "--quiet", "--bare", "--initial-branch=main"],
            &repo.root,
            Some(name),
        );
        repo
    }

    /// The bare repository itself (what the GitHub stand-in reads).
    pub fn git_dir(&self) -> PathBuf {
        self.root.join(&self.name)
    }

    /// Points `main` at `commit` (to replay a history one commit at a time).
    pub fn move_main(&self, commit: &str) {
        self.git(
            &["update-ref", "refs/heads/main", commit],
            &self.git_dir(),
            None,
        );
    }

    /// Entries in the tree of `commit`.
    pub fn tree_size(&self, commit: &str) -> usize {
        self.git(
            &["ls-tree", "-r", "--name-only", commit],
            &self.git_dir(),
            None,
        )
        .lines()
        .count()
    }

    /// Bytes of the blobs in the tree of `commit`.
    pub fn tree_bytes(&self, commit: &str) -> u64 {
        self.git(&["ls-tree", "-r", "-l", commit], &self.git_dir(), None)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok())
            .sum()
    }

    /// Paths added, modified or deleted between two commits.
    pub fn changed_files(&self, from: &str, to: &str) -> usize {
        self.git(
            &["diff", "--name-only", "--no-renames", from, to],
            &self.git_dir(),
            None,
        )
        .lines()
        .count()
    }

    pub fn head(&self) -> &str {
        self.commits.last().expect("at least one commit")
    }

    fn git(&self, args: &[&str], dir: &Path, extra: Option<&str>) -> String {
        let mut cmd = Command::new("git");
        cmd.current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .args(args)
            .args(extra);
        let out = cmd.output().expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// One commit on `main`: with `replace_all` the tree is exactly
    /// `changes`, otherwise `changes` are applied on top of the previous one.
    pub fn commit(
        &mut self,
        message: &str,
        replace_all: bool,
        changes: impl IntoIterator<Item = Change>,
    ) -> String {
        // Replaying a history moves `main` back; new commits go on the last one.
        if let Some(last) = self.commits.last() {
            self.move_main(last);
        }
        let mut child = Command::new("git")
            .current_dir(self.git_dir())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .args(["fast-import", "--quiet", "--date-format=raw"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start git fast-import");
        {
            let mut out =
                std::io::BufWriter::with_capacity(1 << 20, child.stdin.take().expect("stdin"));
            self.clock += 60;
            write!(
                out,
                "commit refs/heads/main\ncommitter Bench <bench@example.com> {} +0000\ndata {}\n{message}\n",
                self.clock,
                message.len()
            )
            .and_then(|_| match self.commits.last() {
                Some(parent) => writeln!(out, "from {parent}"),
                None => Ok(()),
            })
            .and_then(|_| if replace_all { writeln!(out, "deleteall") } else { Ok(()) })
            .expect("write fast-import header");
            for Change::Write(path, content) in changes {
                write!(
                    out,
                    "M 100644 inline {}\ndata {}\n",
                    quote(&path),
                    content.len()
                )
                .and_then(|_| out.write_all(&content))
                .and_then(|_| out.write_all(b"\n"))
                .expect("write to git fast-import");
            }
            writeln!(out)
                .and_then(|_| out.flush())
                .expect("finish the fast-import stream");
        }
        let out = child.wait_with_output().expect("git fast-import finishes");
        assert!(
            out.status.success(),
            "git fast-import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sha = self.git(&["rev-parse", "refs/heads/main"], &self.git_dir(), None);
        self.commits.push(sha.clone());
        sha
    }
}

/// fast-import's C-style quoting, for paths that need it.
fn quote(path: &str) -> String {
    if !path.contains(['"', '\\', '\n']) && !path.starts_with('"') {
        return path.to_string();
    }
    let escaped = path
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}

/// SplitMix64: small, seedable, and the same on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Log-normal around `median` (Box–Muller for the normal draw).
    fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        let normal = (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos();
        median * (sigma * normal).exp()
    }
}

/// What a generated repository looks like.
#[derive(Clone, Copy)]
pub struct Shape {
    pub files: usize,
    pub seed: u64,
}

/// Totals of a tree, for the report.
#[derive(Clone, Copy, Default)]
pub struct TreeStats {
    pub files: usize,
    pub bytes: u64,
    pub binary: usize,
}

/// Median and spread of file sizes: text mostly 1–20 KB around 3 KiB, binary
/// larger around 16 KiB; both with a long tail, capped.
const TEXT_MEDIAN: f64 = 3_072.0;
const TEXT_SIGMA: f64 = 1.0;
const TEXT_MAX: f64 = 512.0 * 1024.0;
const BINARY_MEDIAN: f64 = 16_384.0;
const BINARY_SIGMA: f64 = 1.2;
const BINARY_MAX: f64 = 4.0 * 1024.0 * 1024.0;
const BINARY_PER_MILLE: u64 = 50;

/// 40 files per directory, 25 top-level packages.
fn generated_path(i: usize, binary: bool) -> String {
    let leaf = i / 40;
    let ext = if binary {
        "bin"
    } else {
        ["rs", "ts", "py", "go", "md"][i % 5]
    };
    format!("pkg{:02}/mod{:03}/file{i:06}.{ext}", leaf % 25, leaf / 25)
}

const WORDS: [&str; 16] = [
    "let", "value", "config", "request", "handler", "return", "match", "result", "error", "index",
    "buffer", "stream", "client", "state", "update", "retry",
];

/// File `i` at `version`: whether it is binary is fixed per file, its size
/// and bytes change with the version.
fn generated_file(shape: Shape, i: usize, version: u64) -> (String, Vec<u8>, bool) {
    let binary = Rng::new(shape.seed ^ (i as u64).wrapping_mul(0x51_7CC1_B727_220A)).next_u64()
        % 1000
        < BINARY_PER_MILLE;
    let mut rng =
        Rng::new(shape.seed ^ ((i as u64) << 20) ^ version.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let size = if binary {
        rng.log_normal(BINARY_MEDIAN, BINARY_SIGMA)
            .clamp(256.0, BINARY_MAX)
    } else {
        rng.log_normal(TEXT_MEDIAN, TEXT_SIGMA)
            .clamp(40.0, TEXT_MAX)
    } as usize;
    let mut content = Vec::with_capacity(size + 128);
    if binary {
        content.extend_from_slice(b"\x89BIN\0\x01");
        while content.len() < size {
            content.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        content.truncate(size);
    } else {
        let _ = writeln!(content, "// file {i}, version {version}");
        let mut line = 0usize;
        while content.len() < size {
            let indent = [0, 4, 8, 4][line % 4];
            content.extend(std::iter::repeat_n(b' ', indent));
            let words = 3 + (rng.next_u64() % 9) as usize;
            for w in 0..words {
                let word = WORDS[(rng.next_u64() % WORDS.len() as u64) as usize];
                let _ = write!(
                    content,
                    "{}{word}_{}",
                    if w == 0 { "" } else { " " },
                    rng.next_u64() % 1000
                );
            }
            content.extend_from_slice(b";\n");
            line += 1;
        }
    }
    (generated_path(i, binary), content, binary)
}

/// A generated repository: one commit with `shape.files` files.
pub fn generate(name: &str, shape: Shape) -> (BareRepo, TreeStats) {
    let mut repo = BareRepo::new(name);
    let mut stats = TreeStats::default();
    let files = (0..shape.files).map(|i| {
        let (path, content, binary) = generated_file(shape, i, 0);
        stats.files += 1;
        stats.bytes += content.len() as u64;
        stats.binary += usize::from(binary);
        Change::Write(path, content)
    });
    repo.commit(&format!("{} generated files", shape.files), true, files);
    (repo, stats)
}

/// Commits a change of `k` files spread over the tree (every
/// `files / k`-th file, shifted by `round` so rounds touch different files).
pub fn change_files(repo: &mut BareRepo, shape: Shape, k: usize, round: u64) -> String {
    let step = (shape.files / k).max(1);
    let changes = (0..k).map(|j| {
        let i = (j * step + round as usize) % shape.files;
        let (path, content, _) = generated_file(shape, i, round);
        Change::Write(path, content)
    });
    repo.commit(&format!("change {k} files"), false, changes)
}

/// The real project whose consecutive commits are replayed:
/// `BENCH_E2E_REAL_REPO` (any git repository), else the checkout the
/// benchmark runs from.
pub fn real_project() -> Option<PathBuf> {
    let path = std::env::var_os("BENCH_E2E_REAL_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let out = Command::new("git")
        .arg("-C")
        .arg(&path)
        .args(["rev-parse", "--path-format=absolute", "--git-common-dir"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The last `count` + 1 first-parent commits of `source`'s HEAD, oldest
/// first, replayed as a linear history in a bare repository that borrows
/// the source's objects (an alternate: nothing is copied; `git daemon` and
/// the stand-in read through it); `main` points at the oldest. Each commit
/// keeps its tree, except that blobs the source does not hold (a partial
/// or shallow copy of a project) are left out of every tree, so both
/// routes can serve every commit; their real changes are what the replay
/// measures.
pub fn replay_history(name: &str, source: &Path, count: usize) -> Option<BareRepo> {
    let mut repo = BareRepo::new(name);
    let listed = repo.git(
        &[
            "rev-list",
            "--first-parent",
            &format!("--max-count={}", count + 1),
            "HEAD",
        ],
        source,
        None,
    );
    let mut originals: Vec<String> = listed.lines().map(str::to_string).collect();
    if originals.len() < 2 {
        return None;
    }
    originals.reverse();
    std::fs::write(
        repo.git_dir().join("objects/info/alternates"),
        format!("{}\n", source.join("objects").display()),
    )
    .expect("write the alternates file");
    let git_dir = repo.git_dir();
    let index = repo.root.join("replay-index");
    // `update-index` wants a work tree; an empty one, never read.
    let work_tree = repo.root.join("replay-work-tree");
    std::fs::create_dir_all(&work_tree).expect("an empty work tree");
    let mut parent: Option<String> = None;
    let mut commits = Vec::new();
    for original in &originals {
        let run = |args: &[&str], input: Option<&str>| -> String {
            let mut cmd = Command::new("git");
            cmd.current_dir(&git_dir)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_INDEX_FILE", &index)
                .env("GIT_WORK_TREE", &work_tree)
                .env("GIT_AUTHOR_NAME", "bench")
                .env("GIT_AUTHOR_EMAIL", "bench@example.com")
                .env("GIT_COMMITTER_NAME", "bench")
                .env("GIT_COMMITTER_EMAIL", "bench@example.com")
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("git runs");
            let mut stdin = child.stdin.take().expect("stdin");
            let input = input.unwrap_or_default().to_string();
            let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
            let out = child.wait_with_output().expect("git runs");
            writer.join().expect("stdin writer").expect("write to git");
            assert!(
                out.status.success(),
                "git {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        run(&["read-tree", original.as_str()], None);
        // Entries whose blob is absent: `<mode> <sha> <stage>\t<path>`.
        let staged = run(&["ls-files", "--stage", "-z"], None);
        let entries: Vec<(&str, &str)> = staged
            .split('\0')
            .filter_map(|e| {
                let (meta, path) = e.split_once('\t')?;
                let sha = meta.split(' ').nth(1)?;
                (!meta.starts_with("160000")).then_some((sha, path))
            })
            .collect();
        let check: String = entries.iter().map(|(sha, _)| format!("{sha}\n")).collect();
        let answers = run(&["cat-file", "--batch-check"], Some(&check));
        let absent: Vec<&str> = answers
            .lines()
            .zip(&entries)
            .filter(|(answer, _)| answer.ends_with(" missing"))
            .map(|(_, (_, path))| *path)
            .collect();
        if !absent.is_empty() {
            let paths: String = absent.iter().map(|p| format!("{p}\0")).collect();
            run(
                &["update-index", "--force-remove", "-z", "--stdin"],
                Some(&paths),
            );
        }
        let tree = run(&["write-tree"], None).trim().to_string();
        let subject = run(&["log", "-1", "--format=%s", original.as_str()], None);
        let mut args = vec!["commit-tree", tree.as_str(), "-m", subject.trim()];
        if let Some(parent) = &parent {
            args.extend(["-p", parent.as_str()]);
        }
        let commit = run(&args, None).trim().to_string();
        parent = Some(commit.clone());
        commits.push(commit);
    }
    repo.move_main(&commits[0]);
    repo.commits = commits;
    Some(repo)
}

/// One version of a crate in the registry source cache.
pub struct CrateVersion {
    pub version: String,
    pub dir: PathBuf,
}

/// The crate to build a real history from: `BENCH_REAL_CRATE` if set, else
/// the crate with at least two versions in the cache and the most files.
/// Versions are ordered by their numeric major.minor.patch.
pub fn find_real_crate() -> Option<(String, Vec<CrateVersion>)> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let mut by_crate: std::collections::BTreeMap<String, Vec<CrateVersion>> = Default::default();
    for registry in std::fs::read_dir(home.join("registry/src")).ok()?.flatten() {
        for entry in std::fs::read_dir(registry.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let dir_name = entry.file_name().to_string_lossy().into_owned();
            if let Some((name, version)) = split_name_version(&dir_name) {
                by_crate
                    .entry(name.to_string())
                    .or_default()
                    .push(CrateVersion {
                        version: version.to_string(),
                        dir: entry.path(),
                    });
            }
        }
    }
    let wanted = std::env::var("BENCH_REAL_CRATE").ok();
    let (name, mut versions) = by_crate
        .into_iter()
        .filter(|(name, versions)| wanted.as_ref().map_or(versions.len() >= 2, |w| w == name))
        .max_by_key(|(_, versions)| {
            versions
                .iter()
                .map(|v| list_files(&v.dir).len())
                .sum::<usize>()
        })?;
    versions.sort_by_key(|v| version_key(&v.version));
    versions.dedup_by_key(|v| v.version.clone());
    Some((name, versions))
}

/// `name-1.2.3` → (`name`, `1.2.3`): the first `-` followed by a digit.
fn split_name_version(dir_name: &str) -> Option<(&str, &str)> {
    let at = dir_name
        .char_indices()
        .find(|(i, c)| *c == '-' && dir_name[i + 1..].starts_with(|d: char| d.is_ascii_digit()))?
        .0;
    Some((&dir_name[..at], &dir_name[at + 1..]))
}

fn version_key(version: &str) -> (Vec<u64>, String) {
    let (core, pre) = version.split_once(['-', '+']).unwrap_or((version, ""));
    (
        core.split('.').map(|p| p.parse().unwrap_or(0)).collect(),
        pre.to_string(),
    )
}

/// Every regular file below `dir`, relative and sorted, without the
/// registry's own `.cargo-ok` marker. Bounded by the directory tree itself.
fn list_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).into_iter().flatten().flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                let relative = entry
                    .path()
                    .strip_prefix(dir)
                    .expect("below dir")
                    .to_string_lossy()
                    .into_owned();
                if relative != ".cargo-ok" {
                    out.push(relative);
                }
            }
        }
    }
    out.sort();
    out
}

/// The crate's versions as a history, oldest first; the stats are the first
/// version's tree.
pub fn real_history(name: &str, versions: &[CrateVersion]) -> (BareRepo, TreeStats) {
    let mut repo = BareRepo::new(name);
    let mut first = None;
    for version in versions {
        let mut stats = TreeStats::default();
        let files: Vec<Change> = list_files(&version.dir)
            .into_iter()
            .map(|path| {
                let content =
                    std::fs::read(version.dir.join(&path)).expect("read a crate source file");
                stats.files += 1;
                stats.bytes += content.len() as u64;
                stats.binary += usize::from(content.contains(&0));
                Change::Write(path, content)
            })
            .collect();
        repo.commit(&format!("{name} {}", version.version), true, files);
        first.get_or_insert(stats);
    }
    (repo, first.unwrap_or_default())
}
