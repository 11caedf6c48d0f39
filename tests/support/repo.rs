//! Builds real on-disk git repositories with the git CLI for source tests:
//! commits, branches, deletions, renames, force pushes, and hostile trees
//! that `git add` would refuse (written with `git mktree`). Also the oracle:
//! what `git ls-tree -r -l` and `git cat-file` say about a commit.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A non-bare repository in a temporary directory, branch `main`.
pub struct TestRepo {
    _dir: tempfile::TempDir,
    /// The directory containing the work tree (serve its parent).
    pub path: PathBuf,
    /// Every commit created, in order, including ones later force-pushed away.
    pub commits: Vec<String>,
    clock: u64,
}

/// One line of `git ls-tree -r -l`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GitEntry {
    pub path: Vec<u8>,
    pub mode: u32,
    pub kind: String,
    pub sha: String,
    pub size: Option<u64>,
}

impl TestRepo {
    /// An empty repository named `name` (the served path is `/<name>`).
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join(name);
        std::fs::create_dir_all(&path).expect("repository directory");
        let repo = TestRepo {
            _dir: dir,
            path,
            commits: Vec::new(),
            clock: 1_700_000_000,
        };
        repo.git(&["init", "--quiet", "--initial-branch=main"]);
        repo
    }

    /// The parent of the repository: the base path servers export.
    pub fn root(&self) -> &Path {
        self.path.parent().expect("repository has a parent")
    }

    /// The repository's `.git` directory.
    pub fn git_dir(&self) -> PathBuf {
        self.path.join(".git")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("git");
        cmd.current_dir(&self.path)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .args([
                "-c",
                "user.name=Test",
                "-c",
                "user.email=test@example.com",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(["-c", "core.autocrlf=false", "-c", "core.symlinks=true"])
            .args(args);
        cmd
    }

    /// Runs git and returns stdout; panics with stderr on failure.
    pub fn git_bytes(&self, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        let mut cmd = self.command(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("git runs");
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input)
                .expect("write stdin");
        }
        let out = child.wait_with_output().expect("git finishes");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    pub fn git(&self, args: &[&str]) -> String {
        String::from_utf8(self.git_bytes(args, None))
            .expect("utf-8 output")
            .trim()
            .to_string()
    }

    pub fn write(&self, path: &str, content: impl AsRef<[u8]>) -> &Self {
        let full = self.path.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("create dirs");
        std::fs::write(full, content).expect("write file");
        self
    }

    pub fn write_executable(&self, path: &str, content: impl AsRef<[u8]>) -> &Self {
        use std::os::unix::fs::PermissionsExt;
        self.write(path, content);
        std::fs::set_permissions(self.path.join(path), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        self
    }

    pub fn symlink(&self, path: &str, target: &str) -> &Self {
        let full = self.path.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("create dirs");
        std::os::unix::fs::symlink(target, full).expect("symlink");
        self
    }

    pub fn remove(&self, path: &str) -> &Self {
        self.git(&["rm", "--quiet", "-r", path]);
        self
    }

    pub fn rename(&self, from: &str, to: &str) -> &Self {
        if let Some(parent) = self.path.join(to).parent() {
            std::fs::create_dir_all(parent).expect("create dirs");
        }
        self.git(&["mv", from, to]);
        self
    }

    /// A gitlink (submodule entry) pinned at `commit`, without a checkout.
    pub fn add_submodule_entry(&self, path: &str, commit: &str) -> &Self {
        // An empty directory is how git sees a submodule not checked out.
        std::fs::create_dir_all(self.path.join(path)).expect("submodule directory");
        self.git(&[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{commit},{path}"),
        ]);
        self
    }

    /// Stages everything and commits with a deterministic, increasing date.
    pub fn commit(&mut self, message: &str) -> String {
        self.git(&["add", "--all"]);
        self.clock += 60;
        let date = format!("{} +0000", self.clock);
        let mut cmd = self.command(&[
            "commit",
            "--quiet",
            "--allow-empty",
            "--no-verify",
            "-m",
            message,
        ]);
        cmd.env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date);
        let out = cmd.output().expect("git commit");
        assert!(
            out.status.success(),
            "commit failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sha = self.head();
        self.commits.push(sha.clone());
        sha
    }

    /// Commits a tree given as raw `git mktree` lines on top of HEAD and
    /// points `branch` at it: the way to get entries `git add` refuses.
    pub fn commit_raw_tree(&mut self, branch: &str, mktree_lines: &[u8], message: &str) -> String {
        let tree = String::from_utf8(self.git_bytes(&["mktree", "-z"], Some(mktree_lines)))
            .expect("utf-8");
        let parent = self.head();
        let commit = self.git(&["commit-tree", tree.trim(), "-p", &parent, "-m", message]);
        self.git(&["update-ref", &format!("refs/heads/{branch}"), &commit]);
        self.commits.push(commit.clone());
        commit
    }

    /// Stores `content` as a blob and returns its id.
    pub fn hash_blob(&self, content: &[u8]) -> String {
        String::from_utf8(self.git_bytes(&["hash-object", "-w", "--stdin"], Some(content)))
            .expect("utf-8")
            .trim()
            .to_string()
    }

    pub fn branch(&self, name: &str) -> &Self {
        self.git(&["branch", name]);
        self
    }

    pub fn checkout(&self, name: &str) -> &Self {
        self.git(&["checkout", "--quiet", name]);
        self
    }

    /// Moves `branch` to `commit` regardless of ancestry (a force push).
    pub fn force_branch(&self, branch: &str, commit: &str) -> &Self {
        if self.git(&["rev-parse", "--abbrev-ref", "HEAD"]) == branch {
            self.git(&["reset", "--quiet", "--hard", commit]);
        } else {
            self.git(&["branch", "--force", branch, commit]);
        }
        self
    }

    pub fn delete_branch(&self, branch: &str) -> &Self {
        self.git(&["branch", "--quiet", "-D", branch]);
        self
    }

    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    pub fn rev_parse(&self, rev: &str) -> String {
        self.git(&["rev-parse", "--verify", rev])
    }

    /// `(branch, commit)` for every branch, sorted by name.
    pub fn branches(&self) -> Vec<(String, String)> {
        let out = self.git(&[
            "for-each-ref",
            "--format=%(refname:strip=2) %(objectname)",
            "refs/heads/",
        ]);
        let mut branches: Vec<(String, String)> = out
            .lines()
            .filter_map(|l| {
                l.split_once(' ')
                    .map(|(n, s)| (n.to_string(), s.to_string()))
            })
            .collect();
        branches.sort();
        branches
    }

    /// Commits reachable from any branch.
    pub fn reachable_commits(&self) -> Vec<String> {
        self.git(&["rev-list", "--branches"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The oracle: `git ls-tree -r -l -z <commit>`, sorted by path.
    pub fn ls_tree(&self, commit: &str) -> Vec<GitEntry> {
        let out = self.git_bytes(&["ls-tree", "-r", "-l", "-z", "--full-tree", commit], None);
        let mut entries: Vec<GitEntry> = out
            .split(|b| *b == 0)
            .filter(|r| !r.is_empty())
            .map(|record| {
                let tab = record.iter().position(|b| *b == b'\t').expect("tab");
                let meta = std::str::from_utf8(&record[..tab]).expect("utf-8 meta");
                let f: Vec<&str> = meta.split_ascii_whitespace().collect();
                GitEntry {
                    path: record[tab + 1..].to_vec(),
                    mode: u32::from_str_radix(f[0], 8).expect("octal"),
                    kind: f[1].to_string(),
                    sha: f[2].to_string(),
                    size: f[3].parse().ok(),
                }
            })
            .collect();
        entries.sort();
        entries
    }

    /// The oracle: `git cat-file blob <sha>`.
    pub fn cat_file(&self, sha: &str) -> Vec<u8> {
        self.git_bytes(&["cat-file", "blob", sha], None)
    }

    /// Builds a repository with history exercising every kind of change:
    /// add, modify, delete, rename, executable and symlink entries, nested
    /// directories, a second branch, and a force push that abandons a commit.
    pub fn with_history(name: &str) -> Self {
        let mut repo = TestRepo::new(name);
        repo.write("README.md", "# demo\n")
            .write("src/lib.rs", "pub fn a() {}\n")
            .write("src/util/mod.rs", "// util\n");
        repo.commit("add files");
        repo.write("src/lib.rs", "pub fn a() {}\npub fn b() {}\n")
            .write_executable("bin/run.sh", "#!/bin/sh\necho hi\n");
        repo.commit("modify and add an executable");
        repo.remove("src/util/mod.rs")
            .symlink("docs/link", "../README.md");
        repo.commit("delete and add a symlink");
        repo.rename("src/lib.rs", "src/core/lib.rs");
        repo.commit("rename");
        repo.branch("feature/x").checkout("feature/x");
        repo.write("feature.txt", "on a branch\n");
        repo.commit("feature work");
        let abandoned = {
            repo.write("feature.txt", "to be force-pushed away\n");
            repo.commit("abandoned")
        };
        let base = repo.rev_parse(&format!("{abandoned}~1"));
        repo.force_branch("feature/x", &base);
        repo.write("feature.txt", "rewritten\n");
        repo.commit("rewritten after force push");
        repo.checkout("main");
        repo.write("README.md", "# demo\n\nmore\n");
        repo.commit("modify on main");
        repo
    }
}

/// Asserts that `source` answers exactly what git itself says about `repo`:
/// the same branches and heads, and at each of `commits` the same tree
/// (`git ls-tree -r -l`) and the same blob bytes (`git cat-file`).
pub async fn assert_source_matches_git(
    source: &dyn projectsync::source::Source,
    repo: &TestRepo,
    commits: &[String],
) {
    let branches: Vec<(String, String)> = source
        .fetch_branches()
        .await
        .expect("branches")
        .into_iter()
        .map(|b| (b.name, b.commit_sha))
        .collect();
    assert_eq!(
        branches,
        repo.branches(),
        "branches of {}",
        source.describe()
    );
    for (name, sha) in repo.branches() {
        let head = source
            .fetch_branch_head(&name, None)
            .await
            .expect("branch head");
        assert_eq!(head.changed_sha(), Some(sha.as_str()), "head of {name}");
    }
    let mut seen = std::collections::HashSet::new();
    for commit in commits {
        let tree = source.fetch_tree(commit, None).await.expect("tree");
        assert_eq!(&tree.commit_sha, commit);
        assert!(
            tree.rejected.is_empty(),
            "unexpected rejections at {commit}: {:?}",
            tree.rejected
        );
        let got: Vec<GitEntry> = tree
            .entries
            .iter()
            .map(|e| GitEntry {
                path: e.path.as_bytes().to_vec(),
                mode: e.mode,
                kind: if e.kind == projectsync::source::EntryKind::Submodule {
                    "commit"
                } else {
                    "blob"
                }
                .into(),
                sha: e.blob_sha.clone(),
                size: e.size,
            })
            .collect();
        let mut got = got;
        got.sort();
        assert_eq!(
            got,
            repo.ls_tree(commit),
            "tree of {commit} from {}",
            source.describe()
        );
        for entry in tree.entries.iter().filter(|e| e.kind.has_blob()) {
            if seen.insert(entry.blob_sha.clone()) {
                let bytes = source
                    .fetch_blob(&entry.blob_sha, u64::MAX)
                    .await
                    .expect("blob");
                assert_eq!(
                    bytes.as_ref(),
                    repo.cat_file(&entry.blob_sha).as_slice(),
                    "blob {} ({})",
                    entry.blob_sha,
                    entry.path
                );
            }
        }
    }
}
