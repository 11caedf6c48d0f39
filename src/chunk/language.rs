//! The language of a file, from its name (well-known names, then the
//! extension) and, for extensionless scripts, the `#!` line. Pure, no I/O.
//!
//! The names ([`Language::as_str`]) are stored in `memory_entries.language`;
//! changing this table changes stored rows, so it bumps
//! [`super::CHUNKER_ALGORITHM_VERSION`].

use std::fmt;

/// A language the chunker recognises. Anything else is `None` ("text").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Language {
    Bazel,
    C,
    CMake,
    Cpp,
    CSharp,
    Css,
    Dart,
    Dockerfile,
    Elixir,
    Erlang,
    Go,
    GoModule,
    GraphQl,
    Groovy,
    Haskell,
    Hcl,
    Html,
    Ini,
    Java,
    JavaScript,
    Json,
    Kotlin,
    Lua,
    Makefile,
    Markdown,
    ObjectiveC,
    Perl,
    Php,
    PowerShell,
    Protobuf,
    Python,
    R,
    Ruby,
    Rust,
    Scala,
    Scss,
    Shell,
    Sql,
    Svelte,
    Swift,
    Toml,
    TypeScript,
    Vue,
    Xml,
    Yaml,
    Zig,
    ReStructuredText,
    PlainText,
}

impl Language {
    /// The stored name: lowercase, stable.
    pub fn as_str(self) -> &'static str {
        use Language::*;
        match self {
            Bazel => "bazel",
            C => "c",
            CMake => "cmake",
            Cpp => "cpp",
            CSharp => "csharp",
            Css => "css",
            Dart => "dart",
            Dockerfile => "dockerfile",
            Elixir => "elixir",
            Erlang => "erlang",
            Go => "go",
            GoModule => "gomod",
            GraphQl => "graphql",
            Groovy => "groovy",
            Haskell => "haskell",
            Hcl => "hcl",
            Html => "html",
            Ini => "ini",
            Java => "java",
            JavaScript => "javascript",
            Json => "json",
            Kotlin => "kotlin",
            Lua => "lua",
            Makefile => "makefile",
            Markdown => "markdown",
            ObjectiveC => "objectivec",
            Perl => "perl",
            Php => "php",
            PowerShell => "powershell",
            Protobuf => "protobuf",
            Python => "python",
            R => "r",
            Ruby => "ruby",
            Rust => "rust",
            Scala => "scala",
            Scss => "scss",
            Shell => "shell",
            Sql => "sql",
            Svelte => "svelte",
            Swift => "swift",
            Toml => "toml",
            TypeScript => "typescript",
            Vue => "vue",
            Xml => "xml",
            Yaml => "yaml",
            Zig => "zig",
            ReStructuredText => "restructuredtext",
            PlainText => "text",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The language of the file at `path` (a repository path, `/`-separated),
/// looking at `content` only for a `#!` line when the name says nothing.
/// `None` when unknown.
pub fn detect_language(path: &str, content: &str) -> Option<Language> {
    let name = path.rsplit('/').next().unwrap_or(path);
    from_file_name(name)
        .or_else(|| from_extension(name))
        .or_else(|| from_shebang(content))
}

/// Well-known file names, matched exactly (or by a well-known prefix).
fn from_file_name(name: &str) -> Option<Language> {
    use Language::*;
    let lower = name.to_ascii_lowercase();
    Some(match lower.as_str() {
        "dockerfile" | "containerfile" => Dockerfile,
        "makefile" | "gnumakefile" => Makefile,
        "cmakelists.txt" => CMake,
        "go.mod" | "go.work" => GoModule,
        "go.sum" | "go.work.sum" => PlainText,
        "cargo.lock" | "poetry.lock" | "pipfile" => Toml,
        "gemfile" | "rakefile" | "podfile" | "vagrantfile" | "brewfile" => Ruby,
        "jenkinsfile" => Groovy,
        "build.bazel" | "workspace.bazel" | "module.bazel" => Bazel,
        // Case-sensitive: a script called `build` is not a Bazel file.
        _ if name == "BUILD" || name == "WORKSPACE" => Bazel,
        ".bashrc" | ".bash_profile" | ".zshrc" | ".profile" | ".envrc" => Shell,
        ".editorconfig" | ".gitconfig" | ".npmrc" => Ini,
        "license" | "licence" | "copying" | "notice" | "authors" | "codeowners" => PlainText,
        _ if lower.starts_with("dockerfile.") || lower.starts_with("containerfile.") => Dockerfile,
        _ => return None,
    })
}

/// The extension after the last dot (case-insensitive).
fn from_extension(name: &str) -> Option<Language> {
    use Language::*;
    let (stem, ext) = name.rsplit_once('.')?;
    if stem.is_empty() && !matches!(ext, "env") {
        // `.gitignore`, `.dockerignore`: a dot-file, not an extension.
        return None;
    }
    Some(match ext.to_ascii_lowercase().as_str() {
        "rs" => Rust,
        "go" => Go,
        "py" | "pyi" | "pyw" => Python,
        "ts" | "tsx" | "mts" | "cts" => TypeScript,
        "js" | "jsx" | "mjs" | "cjs" => JavaScript,
        "java" => Java,
        "kt" | "kts" => Kotlin,
        "scala" | "sc" => Scala,
        "groovy" | "gradle" => Groovy,
        "c" | "h" => C,
        "cc" | "cpp" | "cxx" | "c++" | "hh" | "hpp" | "hxx" | "h++" | "ipp" | "inl" => Cpp,
        "m" | "mm" => ObjectiveC,
        "cs" => CSharp,
        "swift" => Swift,
        "dart" => Dart,
        "rb" | "rake" | "gemspec" => Ruby,
        "php" => Php,
        "pl" | "pm" => Perl,
        "lua" => Lua,
        "r" => R,
        "ex" | "exs" => Elixir,
        "erl" | "hrl" => Erlang,
        "hs" => Haskell,
        "zig" => Zig,
        "md" | "markdown" | "mdx" => Markdown,
        "rst" => ReStructuredText,
        "txt" | "text" => PlainText,
        "yaml" | "yml" => Yaml,
        "json" | "jsonc" | "json5" | "ndjson" | "jsonl" => Json,
        "toml" => Toml,
        "ini" | "cfg" | "conf" | "env" | "properties" => Ini,
        "xml" | "xsd" | "xsl" | "svg" | "plist" | "csproj" | "pom" => Xml,
        "html" | "htm" | "xhtml" => Html,
        "css" => Css,
        "scss" | "sass" | "less" => Scss,
        "vue" => Vue,
        "svelte" => Svelte,
        "sh" | "bash" | "zsh" | "ksh" | "fish" => Shell,
        "ps1" | "psm1" | "psd1" => PowerShell,
        "sql" => Sql,
        "proto" => Protobuf,
        "graphql" | "gql" => GraphQl,
        "tf" | "tfvars" | "hcl" => Hcl,
        "mk" | "mak" => Makefile,
        "cmake" => CMake,
        "bzl" | "bazel" => Bazel,
        "dockerfile" | "containerfile" => Dockerfile,
        _ => return None,
    })
}

/// An interpreter named on a `#!` first line: `#!/bin/sh`,
/// `#!/usr/bin/env -S python3 -u`.
fn from_shebang(content: &str) -> Option<Language> {
    use Language::*;
    let line = content.strip_prefix("#!")?.lines().next()?;
    let mut words = line.split_whitespace();
    let mut program = words.next()?.rsplit('/').next()?;
    if program == "env" {
        program = words.find(|w| !w.starts_with('-'))?;
    }
    let program = program.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    Some(match program {
        "sh" | "bash" | "zsh" | "ksh" | "dash" | "ash" | "fish" => Shell,
        "python" => Python,
        "node" | "nodejs" | "deno" | "bun" => JavaScript,
        "ts-node" | "tsx" => TypeScript,
        "ruby" => Ruby,
        "perl" => Perl,
        "php" => Php,
        "lua" => Lua,
        "Rscript" => R,
        "pwsh" => PowerShell,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lang(path: &str) -> Option<&'static str> {
        detect_language(path, "").map(Language::as_str)
    }

    #[test]
    fn common_source_extensions_map_to_their_language() {
        assert_eq!(lang("src/main.rs"), Some("rust"));
        assert_eq!(lang("cmd/server/main.go"), Some("go"));
        assert_eq!(lang("app/models.py"), Some("python"));
        assert_eq!(lang("web/App.tsx"), Some("typescript"));
        assert_eq!(lang("web/index.mjs"), Some("javascript"));
        assert_eq!(lang("src/Main.java"), Some("java"));
        assert_eq!(lang("lib/list.h"), Some("c"));
        assert_eq!(lang("lib/list.hpp"), Some("cpp"));
        assert_eq!(lang("README.md"), Some("markdown"));
        assert_eq!(lang("charts/values.yml"), Some("yaml"));
        assert_eq!(lang("package.json"), Some("json"));
        assert_eq!(lang("Cargo.toml"), Some("toml"));
        assert_eq!(lang("hack/testenv.sh"), Some("shell"));
        assert_eq!(lang("migrations/0001_projects.sql"), Some("sql"));
    }

    #[test]
    fn extensions_match_case_insensitively() {
        assert_eq!(lang("LEGACY/MAIN.C"), Some("c"));
        assert_eq!(lang("docs/Guide.MD"), Some("markdown"));
    }

    #[test]
    fn well_known_file_names_win_over_extensions() {
        assert_eq!(lang("Dockerfile"), Some("dockerfile"));
        assert_eq!(lang("build/Dockerfile.release"), Some("dockerfile"));
        assert_eq!(lang("Makefile"), Some("makefile"));
        assert_eq!(lang("CMakeLists.txt"), Some("cmake"));
        assert_eq!(lang("go.mod"), Some("gomod"));
        assert_eq!(lang("Cargo.lock"), Some("toml"));
        assert_eq!(lang("Gemfile"), Some("ruby"));
        assert_eq!(lang("third_party/BUILD"), Some("bazel"));
        assert_eq!(lang("scripts/build"), None);
    }

    #[test]
    fn dot_files_and_unknown_names_have_no_language() {
        assert_eq!(lang(".gitignore"), None);
        assert_eq!(lang("data/blob.bin"), None);
        assert_eq!(lang("bin/tool"), None);
        assert_eq!(lang("archive."), None);
    }

    #[test]
    fn extensionless_scripts_are_recognised_by_their_shebang() {
        let detect = |content| detect_language("bin/tool", content).map(Language::as_str);
        assert_eq!(detect("#!/bin/bash\nset -e\n"), Some("shell"));
        assert_eq!(detect("#!/usr/bin/env python3\nprint()\n"), Some("python"));
        assert_eq!(
            detect("#!/usr/bin/env -S node --no-warnings\n"),
            Some("javascript")
        );
        assert_eq!(detect("#! /usr/bin/perl -w\n"), Some("perl"));
        assert_eq!(detect("echo no shebang\n"), None);
        assert_eq!(detect("#!/opt/unknown-interpreter\n"), None);
    }

    #[test]
    fn a_shebang_does_not_override_the_extension() {
        assert_eq!(
            detect_language("tool.py", "#!/bin/sh\n").map(Language::as_str),
            Some("python")
        );
    }
}
