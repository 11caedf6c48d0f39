//! The stand-in's endpoints: each reads the repository with the git CLI
//! and answers in GitHub's shape.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use axum::http::StatusCode;
use base64::Engine;
use serde_json::{Value, json};

use super::{COMPARE_FILE_LIMIT, Fault, Inner};

/// The result of routing before headers are added.
pub(super) struct Reply {
    pub status: StatusCode,
    pub body: Vec<u8>,
    pub content_type: &'static str,
    pub link: Option<String>,
    pub extra: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn json(value: Value) -> Self {
        let body = serde_json::to_vec_pretty(&value).expect("json");
        Reply {
            status: StatusCode::OK,
            body,
            content_type: "application/json; charset=utf-8",
            link: None,
            extra: Vec::new(),
        }
    }

    pub fn error(status: u16, message: &str, docs: &str) -> Self {
        let mut reply = Reply::json(json!({
            "message": message,
            "documentation_url": format!("https://docs.github.com/rest{docs}"),
            "status": status.to_string(),
        }));
        reply.status = StatusCode::from_u16(status).expect("status");
        reply
    }

    pub fn not_found() -> Self {
        Reply::error(404, "Not Found", "")
    }
}

pub(super) fn repository(inner: &Inner, base: &str) -> Reply {
    let default_branch =
        git(inner, &["symbolic-ref", "--short", "HEAD"]).map(|b| lossy(&b).trim().to_string());
    Reply::json(json!({
        "id": 1, "node_id": "R_1", "name": inner.name, "full_name": format!("{}/{}", inner.owner, inner.name),
        "private": false, "owner": {"login": inner.owner, "id": 1, "type": "User"},
        "url": base, "default_branch": default_branch.unwrap_or_else(|| "main".into()),
    }))
}

pub(super) fn heads(inner: &Inner) -> Vec<(String, String)> {
    let out = git(
        inner,
        &[
            "for-each-ref",
            "--format=%(refname:strip=2)%00%(objectname)",
            "refs/heads/",
        ],
    )
    .unwrap_or_default();
    let mut heads: Vec<(String, String)> = lossy(&out)
        .lines()
        .filter_map(|l| {
            l.split_once('\0')
                .map(|(n, s)| (n.to_string(), s.to_string()))
        })
        .collect();
    heads.sort();
    heads
}

fn branch_json(base: &str, name: &str, sha: &str) -> Value {
    json!({
        "name": name,
        "commit": {"sha": sha, "url": format!("{base}/commits/{sha}")},
        "protected": false,
    })
}

pub(super) fn branches(inner: &Inner, base: &str, query: &HashMap<String, String>) -> Reply {
    let per_page = query
        .get("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = query
        .get("page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let all = heads(inner);
    let last = all.len().div_ceil(per_page).max(1);
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|(n, s)| branch_json(base, n, s))
        .collect();
    let mut reply = Reply::json(Value::Array(items));
    let url = |p: usize| format!("<{base}/branches?per_page={per_page}&page={p}>");
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", url(page - 1)));
    }
    if page < last {
        links.push(format!("{}; rel=\"next\"", url(page + 1)));
        links.push(format!("{}; rel=\"last\"", url(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", url(1)));
    }
    reply.link = (!links.is_empty()).then(|| links.join(", "));
    reply
}

pub(super) fn is_empty_repo(inner: &Inner) -> bool {
    heads(inner).is_empty()
}

pub(super) fn branch(inner: &Inner, base: &str, name: &str) -> Reply {
    match heads(inner).into_iter().find(|(n, _)| n == name) {
        Some((n, s)) => Reply::json(branch_json(base, &n, &s)),
        None => Reply::error(404, "Branch not found", "/branches/branches#get-a-branch"),
    }
}

pub(super) fn git_ref(inner: &Inner, base: &str, name: &str) -> Reply {
    if is_empty_repo(inner) {
        return Reply::error(409, "Git Repository is empty.", "/git/refs#get-a-reference");
    }
    let Some(branch) = name.strip_prefix("heads/") else {
        return Reply::not_found();
    };
    match heads(inner).into_iter().find(|(n, _)| n == branch) {
        Some((_, sha)) => Reply::json(json!({
            "ref": format!("refs/heads/{branch}"),
            "node_id": "REF_1",
            "url": format!("{base}/git/refs/heads/{branch}"),
            "object": {"sha": sha, "type": "commit", "url": format!("{base}/git/commits/{sha}")},
        })),
        None => Reply::error(404, "Not Found", "/git/refs#get-a-reference"),
    }
}

pub(super) fn tree(inner: &Inner, base: &str, spec: &str, recursive: bool) -> Reply {
    if spec.is_empty() || spec.starts_with('-') || spec.contains(':') {
        return Reply::not_found();
    }
    let limit = inner.config.lock().unwrap().tree_entry_limit;
    let mut cat = inner.cat_file.lock().unwrap();
    let Some((tree_sha, root)) = cat.tree_with_sizes(&format!("{spec}^{{tree}}")) else {
        drop(cat);
        if is_empty_repo(inner) {
            return Reply::error(409, "Git Repository is empty.", "/git/trees#get-a-tree");
        }
        return Reply::error(404, "Not Found", "/git/trees#get-a-tree");
    };
    // As `git ls-tree -l [-r -t]`: each tree before what it holds.
    let mut items = Vec::new();
    let mut truncated = false;
    let mut stack = vec![(Vec::new(), root.into_iter())];
    while let Some((prefix, entries)) = stack.last_mut() {
        let Some(entry) = entries.next() else {
            stack.pop();
            continue;
        };
        if recursive && items.len() >= limit {
            truncated = true;
            break;
        }
        let mut path = prefix.clone();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&entry.name);
        let kind = match entry.mode.as_str() {
            "040000" => "tree",
            "160000" => "commit",
            _ => "blob",
        };
        let mut item =
            json!({"path": lossy(&path), "mode": entry.mode, "type": kind, "sha": entry.sha});
        match kind {
            "blob" => {
                item["size"] = json!(entry.size.unwrap_or(0));
                item["url"] = json!(format!("{base}/git/blobs/{}", entry.sha));
            }
            "tree" => {
                item["url"] = json!(format!("{base}/git/trees/{}", entry.sha));
                if recursive {
                    // A listed tree exists; a failed read means the helper
                    // process died or lost its place: start a new one once.
                    let children = cat.tree_with_sizes(&entry.sha).or_else(|| {
                        *cat = CatFile::spawn(&inner.git_dir);
                        cat.tree_with_sizes(&entry.sha)
                    });
                    let Some((_, children)) = children else {
                        return Reply::error(500, "cannot read a listed tree", "/git/trees");
                    };
                    stack.push((path, children.into_iter()));
                }
            }
            _ => {}
        }
        items.push(item);
    }
    Reply::json(
        json!({"sha": tree_sha, "url": format!("{base}/git/trees/{tree_sha}"), "tree": items, "truncated": truncated}),
    )
}

pub(super) fn blob(
    inner: &Inner,
    base: &str,
    sha: &str,
    raw: bool,
    fault: Option<&Fault>,
) -> Reply {
    if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Reply::error(
            422,
            "The sha parameter must be exactly 40 characters and contain only [0-9a-f].",
            "/git/blobs#get-a-blob",
        );
    }
    let Some(mut content) = inner.cat_file.lock().unwrap().blob(sha) else {
        return Reply::error(404, "Not Found", "/git/blobs#get-a-blob");
    };
    if raw {
        let mut reply = Reply::json(Value::Null);
        reply.body = content;
        reply.content_type = "application/vnd.github.raw";
        return reply;
    }
    let size = content.len();
    if fault == Some(&Fault::WrongBlobContent) {
        content.iter_mut().for_each(|b| *b ^= 0x20);
    }
    let mut encoded = base64::engine::general_purpose::STANDARD.encode(&content);
    // GitHub wraps base64 every 60 characters.
    encoded = encoded
        .as_bytes()
        .chunks(60)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect::<Vec<_>>()
        .join("\n");
    if !encoded.is_empty() {
        encoded.push('\n');
    }
    if fault == Some(&Fault::CorruptBlobBase64) {
        encoded.insert_str(0, "!!not*base64!!");
    }
    Reply::json(json!({
        "sha": sha, "node_id": format!("B_{sha}"), "size": size,
        "url": format!("{base}/git/blobs/{sha}"), "content": encoded, "encoding": "base64",
    }))
}

pub(super) fn compare(
    inner: &Inner,
    base_url: &str,
    spec: &str,
    query: &HashMap<String, String>,
) -> Reply {
    if is_empty_repo(inner) {
        return Reply::error(
            409,
            "Git Repository is empty.",
            "/commits/commits#compare-two-commits",
        );
    }
    let Some((base, head)) = spec.split_once("...") else {
        return Reply::not_found();
    };
    let resolve = |r: &str| {
        (!r.starts_with('-'))
            .then(|| {
                git(
                    inner,
                    &[
                        "rev-parse",
                        "--verify",
                        "--quiet",
                        &format!("{r}^{{commit}}"),
                    ],
                )
            })
            .flatten()
            .map(|o| lossy(&o).trim().to_string())
    };
    let (Some(base), Some(head)) = (resolve(base), resolve(head)) else {
        return Reply::error(404, "Not Found", "/commits/commits#compare-two-commits");
    };
    let count = |range: String| {
        lossy(&git(inner, &["rev-list", "--count", &range]).unwrap_or_default())
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    };
    let ahead = count(format!("{base}..{head}"));
    let behind = count(format!("{head}..{base}"));
    let status = match (ahead, behind) {
        (0, 0) => "identical",
        (_, 0) => "ahead",
        (0, _) => "behind",
        _ => "diverged",
    };
    // Unrelated histories: GitHub answers 404 with this message.
    let Some(merge_base) =
        git(inner, &["merge-base", &base, &head]).map(|o| lossy(&o).trim().to_string())
    else {
        return Reply::error(
            404,
            &format!("No common ancestor between {base} and {head}."),
            "/commits/commits#compare-two-commits",
        );
    };
    let raw = git(
        inner,
        &["diff-tree", "-r", "-z", "-M", "--raw", &merge_base, &head],
    )
    .unwrap_or_default();
    let mut fields = raw.split(|b| *b == 0).filter(|f| !f.is_empty());
    let mut files = Vec::new();
    while let Some(meta) = fields.next() {
        let meta = lossy(meta);
        let parts: Vec<&str> = meta.trim_start_matches(':').split(' ').collect();
        let (old_sha, new_sha, code) = (parts[2], parts[3], parts[4]);
        let first = lossy(fields.next().expect("path"));
        let (status, filename, previous) = match &code[..1] {
            "A" => ("added", first, None),
            "D" => ("removed", first, None),
            "M" => ("modified", first, None),
            "T" => ("changed", first, None),
            "R" => (
                "renamed",
                lossy(fields.next().expect("new path")),
                Some(first),
            ),
            "C" => (
                "copied",
                lossy(fields.next().expect("new path")),
                Some(first),
            ),
            _ => ("changed", first, None),
        };
        let sha = if status == "removed" {
            old_sha
        } else {
            new_sha
        };
        let mut file = json!({
            "sha": sha, "filename": filename, "status": status, "additions": 0, "deletions": 0, "changes": 0,
            "blob_url": format!("https://github.com/{}/{}/blob/{head}/{filename}", inner.owner, inner.name),
            "raw_url": format!("https://github.com/{}/{}/raw/{head}/{filename}", inner.owner, inner.name),
            "contents_url": format!("{base_url}/contents/{filename}?ref={head}"),
        });
        if let Some(previous) = previous {
            file["previous_filename"] = json!(previous);
        }
        files.push(file);
        if files.len() == COMPARE_FILE_LIMIT {
            break;
        }
    }
    let per_page = query
        .get("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(250)
        .clamp(1, 250);
    let log = git(
        inner,
        &["rev-list", "--reverse", &format!("{merge_base}..{head}")],
    )
    .unwrap_or_default();
    let commits: Vec<Value> = lossy(&log)
        .lines()
        .take(per_page)
        .map(|sha| json!({"sha": sha, "url": format!("{base_url}/commits/{sha}")}))
        .collect();
    let commit_ref = |sha: &str| json!({"sha": sha, "url": format!("{base_url}/commits/{sha}")});
    Reply::json(json!({
        "url": format!("{base_url}/compare/{spec}"),
        "base_commit": commit_ref(&base), "merge_base_commit": commit_ref(&merge_base),
        "status": status, "ahead_by": ahead, "behind_by": behind, "total_commits": ahead,
        "commits": commits, "files": files,
    }))
}

/// `GET /repos/{o}/{r}/tarball/{ref}`: as GitHub, a 302 to the archive on
/// the download host (here `/_codeload/` of the stand-in itself), naming the
/// commit the ref resolves to.
pub(super) fn tarball(inner: &Inner, origin: &str, spec: &str) -> Reply {
    if is_empty_repo(inner) {
        return Reply::error(
            404,
            "Not Found",
            "/repos/contents#download-a-repository-archive-tar",
        );
    }
    let commit = (!spec.starts_with('-'))
        .then(|| {
            git(
                inner,
                &[
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    &format!("{spec}^{{commit}}"),
                ],
            )
        })
        .flatten();
    let Some(commit) = commit else {
        return Reply::error(
            404,
            "Not Found",
            "/repos/contents#download-a-repository-archive-tar",
        );
    };
    let commit = lossy(&commit).trim().to_string();
    let mut reply = Reply::json(Value::Null);
    reply.status = StatusCode::FOUND;
    reply.body = Vec::new();
    reply.content_type = "text/html;charset=utf-8";
    reply.extra.push((
        "location",
        format!(
            "{origin}/_codeload/{}/{}/legacy.tar.gz/{commit}",
            inner.owner, inner.name
        ),
    ));
    reply
}

/// The archive codeload serves: `git archive` of the commit as a gzip'd
/// tar under `owner-repo-shortsha/`, streamed as git writes it. Stored
/// (level 0) deflate blocks: still gzip to the client, but the stand-in does
/// not spend the test machine's cores on compression GitHub's own servers
/// do (at level 1 it took a fifth of a benchmark's first sync).
pub(super) fn codeload(inner: &Inner, rest: &str) -> Option<tokio::process::Child> {
    let prefix = format!("{}/{}/legacy.tar.gz/", inner.owner, inner.name);
    let commit = rest.strip_prefix(&prefix)?;
    if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    tokio::process::Command::new("git")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .arg("--git-dir")
        .arg(&inner.git_dir)
        .args(["archive", "--format=tar.gz", "-0"])
        .arg(format!(
            "--prefix={}-{}-{}/",
            inner.owner,
            inner.name,
            &commit[..7]
        ))
        .arg(commit)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()
}

pub(super) fn git(inner: &Inner, args: &[&str]) -> Option<Vec<u8>> {
    let out = Command::new("git")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .arg("--git-dir")
        .arg(&inner.git_dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

pub(super) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A long-lived `git cat-file --batch-command --buffer` for object reads:
/// blobs, and trees listed without starting a process per request (a walk
/// of a large repository lists thousands of directories).
pub(super) struct CatFile {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// One item of a tree object.
pub(super) struct TreeItem {
    pub mode: String,
    pub name: Vec<u8>,
    pub sha: String,
    /// Blobs' sizes, when asked for.
    pub size: Option<u64>,
}

impl TreeItem {
    fn is_blob(&self) -> bool {
        !matches!(self.mode.as_str(), "040000" | "160000")
    }
}

impl CatFile {
    pub fn spawn(git_dir: &PathBuf) -> Self {
        let mut child = Command::new("git")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .arg("--git-dir")
            .arg(git_dir)
            .args(["cat-file", "--batch-command", "--buffer"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("git cat-file");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        CatFile {
            _child: child,
            stdin,
            stdout,
        }
    }

    /// `(type, size)` from a header line; `None` for a missing object.
    fn header(&mut self) -> Option<(String, String, usize)> {
        let mut header = String::new();
        self.stdout.read_line(&mut header).ok()?;
        let f: Vec<&str> = header.trim_end().split(' ').collect();
        if f.len() != 3 {
            return None;
        }
        Some((f[0].to_string(), f[1].to_string(), f[2].parse().ok()?))
    }

    /// The id, type and content of `spec` (an id or a revision expression).
    fn object(&mut self, spec: &str) -> Option<(String, String, Vec<u8>)> {
        write!(self.stdin, "contents {spec}\nflush\n").ok()?;
        self.stdin.flush().ok()?;
        let (sha, kind, size) = self.header()?;
        let mut content = vec![0u8; size + 1];
        self.stdout.read_exact(&mut content).ok()?;
        content.pop();
        Some((sha, kind, content))
    }

    pub fn blob(&mut self, sha: &str) -> Option<Vec<u8>> {
        self.object(sha)
            .and_then(|(_, kind, content)| (kind == "blob").then_some(content))
    }

    /// The id and items of the tree `spec` names (`<rev>^{tree}` works).
    fn tree(&mut self, spec: &str) -> Option<(String, Vec<TreeItem>)> {
        let (sha, kind, content) = self.object(spec)?;
        if kind != "tree" {
            return None;
        }
        let mut items = Vec::new();
        let mut rest = content.as_slice();
        while !rest.is_empty() {
            let space = rest.iter().position(|b| *b == b' ')?;
            let nul = rest.iter().position(|b| *b == 0)?;
            let raw = rest.get(nul + 1..nul + 21)?;
            items.push(TreeItem {
                // ls-tree and GitHub print six digits ("040000").
                mode: format!("{:0>6}", String::from_utf8_lossy(&rest[..space])),
                name: rest[space + 1..nul].to_vec(),
                sha: hex::encode(raw),
                size: None,
            });
            rest = &rest[nul + 21..];
        }
        Some((sha, items))
    }

    /// The tree `spec` names with the size of each blob item, the sizes
    /// asked in one round trip.
    pub fn tree_with_sizes(&mut self, spec: &str) -> Option<(String, Vec<TreeItem>)> {
        let (sha, mut items) = self.tree(spec)?;
        let blobs: Vec<&str> = items
            .iter()
            .filter(|i| i.is_blob())
            .map(|i| i.sha.as_str())
            .collect();
        let mut sizes = self.sizes(&blobs)?.into_iter();
        for item in items.iter_mut().filter(|i| i.is_blob()) {
            item.size = sizes.next();
        }
        Some((sha, items))
    }

    /// The sizes of `shas`, asked in one round trip.
    fn sizes(&mut self, shas: &[&str]) -> Option<Vec<u64>> {
        if shas.is_empty() {
            return Some(Vec::new());
        }
        for sha in shas {
            writeln!(self.stdin, "info {sha}").ok()?;
        }
        writeln!(self.stdin, "flush").ok()?;
        self.stdin.flush().ok()?;
        // Every answer is read, even after a bad one, so the next request
        // starts at its own answer.
        let sizes: Vec<Option<u64>> = shas
            .iter()
            .map(|_| self.header().map(|(_, _, size)| size as u64))
            .collect();
        sizes.into_iter().collect()
    }
}

impl Drop for CatFile {
    fn drop(&mut self) {
        let _ = self._child.kill();
        let _ = self._child.wait();
    }
}
