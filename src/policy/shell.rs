//! What a Bash command may create, update or delete, as far as cco can see without running
//! it: a small POSIX-shell lexer (quotes, escapes, substitutions, redirections) and a table
//! of programs and their writing forms. What it cannot see is reported as `Opaque`.
//! [`classify`] also names the files a command writes where it can: redirection targets and
//! the file operands of the programs in [`PATH_WRITERS`] (for the lease check).

/// What running a command may do to files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing cco recognises as creating, updating or deleting.
    Unseen,
    /// A program or form that writes (`rm`, `sed -i`, `> file`, `npm i`, …).
    Writes,
    /// cco cannot tell what runs: unbalanced quotes, a command name built at run time
    /// (`$x`, a glob), inline code for an interpreter, `eval`, `source`.
    Opaque,
}

impl Effect {
    fn max(self, other: Effect) -> Effect {
        use Effect::*;
        match (self, other) {
            (Opaque, _) | (_, Opaque) => Opaque,
            (Writes, _) | (_, Writes) => Writes,
            _ => Unseen,
        }
    }
}

/// Nested `sh -c`, `eval` and substitutions deeper than this are not followed.
const MAX_DEPTH: usize = 8;

/// One word after quote removal.
#[derive(Debug, Default, Clone)]
struct Word {
    text: String,
    /// Holds a parameter expansion, a command substitution or an unquoted glob: its value
    /// is only known when the shell runs.
    dynamic: bool,
}

/// One simple command: its words, whether it redirects output into a file, and the files
/// it redirects into whose names are static.
#[derive(Debug, Default)]
struct Simple {
    words: Vec<Word>,
    writes_file: bool,
    targets: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Redirect {
    None,
    /// `>`, `>>`, `>|`, `&>`: the next word is a file written.
    Out,
    /// `>&`: the next word is a descriptor (`2>&1`), or a file.
    OutDup,
    /// `<`, `<<`, `<<<`, `<&`: the next word is read, not written.
    In,
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    commands: Vec<Simple>,
    current: Simple,
    word: Option<Word>,
    redirect: Redirect,
    /// Commands found inside `$(…)` and backticks, classified on their own.
    nested: Vec<String>,
}

impl<'a> Lexer<'a> {
    fn word(&mut self) -> &mut Word {
        self.word.get_or_insert_with(Word::default)
    }

    fn end_word(&mut self) {
        let Some(w) = self.word.take() else { return };
        match std::mem::replace(&mut self.redirect, Redirect::None) {
            Redirect::None => self.current.words.push(w),
            Redirect::Out => self.target(w),
            Redirect::OutDup => {
                let fd = w.text == "-" || w.text.bytes().all(|b| b.is_ascii_digit());
                if !fd {
                    self.target(w);
                }
            }
            Redirect::In => {}
        }
    }

    /// A file the current command redirects its output into.
    fn target(&mut self, w: Word) {
        if writes_target(&w) {
            self.current.writes_file = true;
            if !w.dynamic {
                self.current.targets.push(w.text);
            }
        }
    }

    fn end_command(&mut self) {
        self.end_word();
        let done = std::mem::take(&mut self.current);
        if !done.words.is_empty() || done.writes_file {
            self.commands.push(done);
        }
    }

    /// Text up to the matching `)` of a `$(`, counting nested parentheses.
    fn substitution(&mut self) -> Option<String> {
        let mut depth = 1;
        let mut inner = String::new();
        for c in self.chars.by_ref() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(inner);
                    }
                }
                _ => {}
            }
            inner.push(c);
        }
        None
    }

    fn backticks(&mut self) -> Option<String> {
        let mut inner = String::new();
        while let Some(c) = self.chars.next() {
            match c {
                '`' => return Some(inner),
                '\\' => inner.extend(self.chars.next()),
                _ => inner.push(c),
            }
        }
        None
    }

    /// `$` outside single quotes: a substitution, arithmetic, or a parameter.
    fn dollar(&mut self) -> Option<()> {
        self.word().dynamic = true;
        match self.chars.peek() {
            Some('(') => {
                self.chars.next();
                let inner = self.substitution()?;
                self.nested.push(inner);
            }
            Some('{') => {
                for c in self.chars.by_ref() {
                    if c == '}' {
                        return Some(());
                    }
                }
                return None;
            }
            Some('\'') => {
                // $'…' (ANSI-C quoting): escapes cco does not decode.
                self.chars.next();
                self.single_quoted()?;
            }
            _ => {}
        }
        Some(())
    }

    fn single_quoted(&mut self) -> Option<()> {
        loop {
            match self.chars.next()? {
                '\'' => return Some(()),
                c => self.word().text.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> Option<()> {
        self.word();
        loop {
            match self.chars.next()? {
                '"' => return Some(()),
                '\\' => match self.chars.next()? {
                    c @ ('"' | '\\' | '$' | '`') => self.word().text.push(c),
                    '\n' => {}
                    c => {
                        self.word().text.push('\\');
                        self.word().text.push(c);
                    }
                },
                '$' => self.dollar()?,
                '`' => {
                    self.word().dynamic = true;
                    let inner = self.backticks()?;
                    self.nested.push(inner);
                }
                c => self.word().text.push(c),
            }
        }
    }

    fn redirect_out(&mut self) {
        // A word of digits right before `>` is the descriptor (`2>`), not an argument.
        if self
            .word
            .as_ref()
            .is_some_and(|w| !w.dynamic && w.text.bytes().all(|b| b.is_ascii_digit()))
        {
            self.word = None;
        }
        self.end_word();
        self.redirect = match self.chars.peek() {
            Some('&') => {
                self.chars.next();
                Redirect::OutDup
            }
            Some('>' | '|') => {
                self.chars.next();
                Redirect::Out
            }
            _ => Redirect::Out,
        };
    }

    fn redirect_in(&mut self) {
        if self
            .word
            .as_ref()
            .is_some_and(|w| !w.dynamic && w.text.bytes().all(|b| b.is_ascii_digit()))
        {
            self.word = None;
        }
        self.end_word();
        while matches!(self.chars.peek(), Some('<' | '&' | '-')) {
            self.chars.next();
        }
        if self.chars.peek() == Some(&'>') {
            // `<>` opens for reading and writing.
            self.chars.next();
            self.redirect = Redirect::Out;
        } else {
            self.redirect = Redirect::In;
        }
    }

    fn run(mut self) -> Option<(Vec<Simple>, Vec<String>)> {
        while let Some(c) = self.chars.next() {
            match c {
                ' ' | '\t' => self.end_word(),
                '\n' | ';' | '|' | '(' | ')' => self.end_command(),
                '&' => {
                    if self.chars.peek() == Some(&'>') {
                        self.chars.next();
                        self.end_word();
                        if self.chars.peek() == Some(&'>') {
                            self.chars.next();
                        }
                        self.redirect = Redirect::Out;
                    } else {
                        self.end_command();
                    }
                }
                '>' => self.redirect_out(),
                '<' => self.redirect_in(),
                '\'' => {
                    self.word();
                    self.single_quoted()?;
                }
                '"' => self.double_quoted()?,
                '\\' => match self.chars.next() {
                    Some('\n') => {}
                    Some(c) => self.word().text.push(c),
                    None => return None,
                },
                '$' => self.dollar()?,
                '`' => {
                    self.word().dynamic = true;
                    let inner = self.backticks()?;
                    self.nested.push(inner);
                }
                '#' if self.word.is_none() => {
                    // A comment runs to the end of the line.
                    while self.chars.next_if(|&c| c != '\n').is_some() {}
                }
                '*' | '?' | '[' => {
                    let w = self.word();
                    w.dynamic = true;
                    w.text.push(c);
                }
                c => self.word().text.push(c),
            }
        }
        if self.redirect != Redirect::None && self.word.is_none() {
            return None; // `cmd >` with no target
        }
        self.end_command();
        Some((self.commands, self.nested))
    }
}

/// A redirection target that is a real file (not a descriptor or the null device).
fn writes_target(w: &Word) -> bool {
    w.dynamic || !matches!(w.text.as_str(), "/dev/null" | "/dev/stdout" | "/dev/stderr")
}

/// The simple commands of `cmd` and the texts of its substitutions; `None` when it does
/// not lex (an unclosed quote or substitution).
fn lex(cmd: &str) -> Option<(Vec<Simple>, Vec<String>)> {
    Lexer {
        chars: cmd.chars().peekable(),
        commands: Vec::new(),
        current: Simple::default(),
        word: None,
        redirect: Redirect::None,
        nested: Vec::new(),
    }
    .run()
}

/// What running `cmd` may do to files, as far as cco can see.
pub fn effect(cmd: &str) -> Effect {
    classify(cmd).effect
}

/// What a command does to files, and which files it writes where cco can name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub effect: Effect,
    /// Files written, as written in the command (relative to its working directory):
    /// static redirection targets and the file operands of [`PATH_WRITERS`]; at most
    /// [`MAX_PATHS`]. A command may write others cco cannot name (a build, a script).
    pub paths: Vec<String>,
}

/// Most paths [`classify`] names for one command.
pub const MAX_PATHS: usize = 16;

/// [`effect`], with the files written that cco can name.
pub fn classify(cmd: &str) -> Seen {
    let mut paths = Vec::new();
    let effect = effect_at(cmd, 0, &mut paths);
    paths.dedup();
    paths.truncate(MAX_PATHS);
    Seen { effect, paths }
}

fn effect_at(cmd: &str, depth: usize, paths: &mut Vec<String>) -> Effect {
    if depth > MAX_DEPTH {
        return Effect::Opaque;
    }
    let Some((commands, nested)) = lex(cmd) else {
        return Effect::Opaque;
    };
    let mut effect = Effect::Unseen;
    for inner in &nested {
        effect = effect.max(effect_at(inner, depth + 1, paths));
    }
    for c in commands {
        if c.writes_file {
            effect = effect.max(Effect::Writes);
        }
        paths.extend(c.targets);
        effect = effect.max(simple_effect(&c.words, depth, paths));
    }
    effect
}

/// Reserved words that start or continue a compound command; the next word is a command.
const KEYWORDS: &[&str] = &[
    "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "time",
];
/// Wrappers that run their arguments as a command, with their options that take a value.
const WRAPPERS: &[(&str, &str)] = &[
    ("sudo", "ugCDhprtU"),
    ("doas", "uC"),
    ("env", "uSC"),
    ("nohup", ""),
    ("nice", "n"),
    ("ionice", "cnp"),
    ("timeout", "sk"),
    ("command", ""),
    ("builtin", ""),
    ("exec", "a"),
    ("stdbuf", "ioe"),
    ("xargs", "IiLlnPsdEa"),
    ("chronic", ""),
    ("setsid", ""),
    ("unbuffer", ""),
    ("caffeinate", "tw"),
];
/// Shells: `-c STRING` is classified; a script or stdin is opaque.
const SHELLS: &[&str] = &["sh", "bash", "zsh", "dash", "ksh", "fish", "ash", "busybox"];
/// Interpreters: inline code (`-c`, `-e`) and scripts are opaque to cco; `-m module` is
/// classified as that module's command (`python -m pip install`).
#[rustfmt::skip]
const INTERPRETERS: &[&str] = &[
    "python", "python2", "python3", "node", "nodejs", "perl", "ruby", "php", "deno", "bun", "lua",
    "Rscript", "osascript", "tclsh", "awk", "gawk", "mawk", "nawk",
];
/// Programs whose every use creates, updates or deletes.
#[rustfmt::skip]
const WRITING_PROGRAMS: &[&str] = &[
    "rm", "rmdir", "mv", "cp", "mkdir", "touch", "chmod", "chown", "chgrp", "chattr", "ln", "dd",
    "truncate", "tee", "install", "unlink", "shred", "patch", "rsync", "scp", "sftp", "wget",
    "mkfifo", "mknod", "mktemp", "split", "csplit", "unzip", "zip", "gzip", "gunzip", "bzip2",
    "bunzip2", "xz", "unxz", "zstd", "unzstd", "7z", "7za", "unrar", "cpio", "ar", "rename",
    "setfacl", "mkfs", "fallocate", "sponge", "srm", "trash", "trash-put",
];
/// Package managers and the sub-commands that change what is installed or the manifest.
#[rustfmt::skip]
const PACKAGE_MANAGERS: &[(&str, &[&str])] = &[
    ("npm", &["i", "in", "ins", "inst", "insta", "instal", "install", "isntall", "add", "ci",
        "uninstall", "un", "unlink", "remove", "rm", "r", "update", "up", "upgrade", "link", "ln",
        "publish", "prune", "dedupe", "ddp", "init", "create", "exec", "x", "pkg", "version",
        "cache", "rebuild", "audit"]),
    ("pnpm", &["i", "install", "add", "remove", "rm", "uninstall", "un", "update", "up", "upgrade",
        "link", "ln", "unlink", "prune", "publish", "init", "create", "dlx", "exec", "import",
        "rebuild", "patch", "patch-commit"]),
    ("yarn", &["install", "add", "remove", "upgrade", "up", "link", "unlink", "publish", "init",
        "create", "dlx", "import", "set", "patch", "patch-commit"]),
    ("bun", &["i", "install", "add", "a", "remove", "rm", "update", "link", "unlink", "publish",
        "init", "create", "x", "patch"]),
    ("pip", &["install", "uninstall", "download", "wheel", "cache"]),
    ("pip3", &["install", "uninstall", "download", "wheel", "cache"]),
    ("pipx", &["install", "uninstall", "upgrade", "upgrade-all", "inject", "run", "reinstall"]),
    ("uv", &["add", "remove", "sync", "lock", "init", "pip", "tool", "venv", "run", "python"]),
    ("poetry", &["add", "remove", "install", "update", "lock", "init", "new", "build", "publish"]),
    ("cargo", &["add", "remove", "rm", "install", "uninstall", "new", "init", "update", "fix",
        "clean", "publish", "generate-lockfile", "vendor", "fmt"]),
    ("go", &["get", "install", "mod", "clean", "generate", "work", "fmt"]),
    ("gem", &["install", "uninstall", "update", "cleanup"]),
    ("bundle", &["install", "update", "add", "remove", "lock", "init", "clean"]),
    ("composer", &["install", "require", "remove", "update", "create-project", "init"]),
    ("apt", &["install", "remove", "purge", "upgrade", "full-upgrade", "dist-upgrade",
        "autoremove", "update"]),
    ("apt-get", &["install", "remove", "purge", "upgrade", "dist-upgrade", "autoremove", "update",
        "build-dep", "source", "clean"]),
    ("brew", &["install", "uninstall", "remove", "rm", "upgrade", "reinstall", "tap", "untap",
        "link", "unlink", "cleanup", "update"]),
    ("dnf", &["install", "remove", "erase", "upgrade", "update", "reinstall", "downgrade",
        "autoremove"]),
    ("yum", &["install", "remove", "erase", "upgrade", "update", "reinstall", "downgrade",
        "autoremove"]),
    ("pacman", &["-S", "-R", "-U", "-Syu", "-Sy", "-Rs", "-Rns"]),
    ("apk", &["add", "del", "upgrade", "update", "fix"]),
    ("snap", &["install", "remove", "refresh"]),
    ("conda", &["install", "remove", "uninstall", "update", "upgrade", "create", "env"]),
    ("mamba", &["install", "remove", "uninstall", "update", "upgrade", "create", "env"]),
    ("npx", &[]),
    ("pnpx", &[]),
    ("bunx", &[]),
];
/// git sub-commands that create, update or delete (in the work tree, the index, refs or
/// a remote).
#[rustfmt::skip]
const GIT_WRITES: &[&str] = &[
    "add", "am", "apply", "checkout", "cherry-pick", "clean", "clone", "commit", "fetch", "gc",
    "init", "merge", "mv", "notes", "prune", "pull", "push", "rebase", "replace", "reset",
    "restore", "revert", "rm", "stash", "submodule", "switch", "update-index", "update-ref",
    "worktree", "filter-branch", "filter-repo", "lfs", "sparse-checkout", "maintenance", "bisect",
    "format-patch", "bundle", "archive", "mergetool", "difftool", "repack", "pack-refs",
    "symbolic-ref", "remote",
];
/// git global options that take a value.
const GIT_VALUE_OPTIONS: &[&str] = &[
    "-C",
    "-c",
    "--git-dir",
    "--work-tree",
    "--namespace",
    "--exec-path",
];

/// The last path component of a command word (`/bin/rm` is `rm`).
fn program_name(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

/// Short options bundled in one word (`-pi`, `-ni.bak`): the letters before any value.
fn short_flags(arg: &str) -> Option<&str> {
    arg.strip_prefix('-')
        .filter(|rest| !rest.is_empty() && !rest.starts_with('-'))
}

fn has_short(args: &[&str], letter: char) -> bool {
    args.iter()
        .filter_map(|a| short_flags(a))
        .any(|f| f.contains(letter))
}

fn has_long(args: &[&str], names: &[&str]) -> bool {
    args.iter().any(|a| {
        names
            .iter()
            .any(|n| *a == *n || a.strip_prefix(n).is_some_and(|r| r.starts_with('=')))
    })
}

fn simple_effect(words: &[Word], depth: usize, paths: &mut Vec<String>) -> Effect {
    let mut i = 0;
    // Leading assignments (`x=rm`) and reserved words.
    while let Some(w) = words.get(i) {
        let assignment = w.text.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit()
        });
        if assignment || KEYWORDS.contains(&w.text.as_str()) {
            i += 1;
        } else {
            break;
        }
    }
    command_effect(&words[i..], depth, paths)
}

fn command_effect(words: &[Word], depth: usize, paths: &mut Vec<String>) -> Effect {
    let Some((first, rest)) = words.split_first() else {
        return Effect::Unseen;
    };
    if first.dynamic {
        return Effect::Opaque;
    }
    let program = program_name(&first.text);
    let args: Vec<&str> = rest.iter().map(|w| w.text.as_str()).collect();
    // `for x in …`, `case … in`: the words are not commands.
    if matches!(program, "for" | "case" | "select" | "function") {
        return Effect::Unseen;
    }
    if let Some((_, valued)) = WRAPPERS.iter().find(|(w, _)| *w == program) {
        let mut j = 0;
        while let Some(a) = args.get(j) {
            if let Some(letters) = short_flags(a) {
                let takes_value = letters.chars().last().is_some_and(|c| valued.contains(c))
                    && letters.len() == 1;
                j += if takes_value { 2 } else { 1 };
            } else if a.starts_with("--")
                || (program == "env" && a.contains('='))
                || (matches!(program, "timeout" | "nice")
                    && a.starts_with(|c: char| c.is_ascii_digit()))
            {
                j += 1;
            } else {
                break;
            }
        }
        return command_effect(&rest[j.min(rest.len())..], depth, paths);
    }
    if SHELLS.contains(&program) {
        return match args
            .iter()
            .position(|a| short_flags(a).is_some_and(|f| f.contains('c')))
        {
            Some(p) => match rest.get(p + 1) {
                Some(script) if !script.dynamic => effect_at(&script.text, depth + 1, paths),
                _ => Effect::Opaque,
            },
            None => Effect::Opaque,
        };
    }
    if matches!(program, "eval" | "source" | "." | "trap") {
        return match program {
            "eval" if rest.iter().all(|w| !w.dynamic) => {
                effect_at(&args.join(" "), depth + 1, paths)
            }
            _ => Effect::Opaque,
        };
    }
    if program == "perl" && (has_short(&args, 'i') || has_long(&args, &["-i"])) {
        paths.extend(written_operands(program, rest));
        return Effect::Writes;
    }
    if INTERPRETERS.contains(&program) {
        if let Some(p) = args.iter().position(|a| *a == "-m") {
            return command_effect(&rest[(p + 1).min(rest.len())..], depth, paths);
        }
        return Effect::Opaque;
    }
    if WRITING_PROGRAMS.contains(&program) {
        paths.extend(written_operands(program, rest));
        return Effect::Writes;
    }
    let writes = match program {
        "sed" => has_short(&args, 'i') || has_long(&args, &["--in-place"]),
        "find" => args.iter().any(|a| {
            matches!(
                *a,
                "-delete"
                    | "-exec"
                    | "-execdir"
                    | "-ok"
                    | "-okdir"
                    | "-fprint"
                    | "-fprint0"
                    | "-fprintf"
                    | "-fls"
            )
        }),
        "curl" => {
            args.iter()
                .filter_map(|a| short_flags(a))
                .any(|f| f.contains(['o', 'O', 'D', 'c']))
                || has_long(
                    &args,
                    &[
                        "--output",
                        "--remote-name",
                        "--remote-name-all",
                        "--output-dir",
                        "--dump-header",
                        "--cookie-jar",
                        "--create-dirs",
                        "--trace",
                        "--trace-ascii",
                        "--stderr",
                    ],
                )
        }
        // Only listing (`tar t`, `tar -tzf`, `--list`) reads without writing.
        "tar" | "bsdtar" | "gtar" => {
            let mode = args
                .first()
                .map(|a| a.trim_start_matches('-'))
                .unwrap_or("");
            let listing = mode.contains('t') && !mode.contains(['x', 'c', 'r', 'u', 'A']);
            !listing && !has_long(&args, &["--list"])
        }
        "git" => return git_effect(&args),
        _ => match PACKAGE_MANAGERS.iter().find(|(m, _)| *m == program) {
            Some((_, [])) => true,
            Some((_, subs)) => args
                .iter()
                .find(|a| !a.starts_with('-') || program == "pacman")
                .is_some_and(|sub| subs.contains(sub)),
            None => false,
        },
    };
    if writes {
        if program == "sed" {
            paths.extend(written_operands(program, rest));
        }
        Effect::Writes
    } else {
        Effect::Unseen
    }
}

/// Programs whose file operands cco names as written, and how to find them:
/// `(program, short options that take a value, which operands)`.
const PATH_WRITERS: &[(&str, &str, Operands)] = &[
    ("rm", "", Operands::All),
    ("rmdir", "", Operands::All),
    ("unlink", "", Operands::All),
    ("shred", "nsu", Operands::All),
    ("touch", "dtr", Operands::All),
    ("truncate", "sr", Operands::All),
    ("tee", "", Operands::All),
    ("mkdir", "m", Operands::All),
    // The source goes too.
    ("mv", "St", Operands::All),
    ("cp", "St", Operands::Last),
    ("install", "gmoSt", Operands::Last),
    ("ln", "St", Operands::Last),
    ("chmod", "", Operands::AfterFirst),
    ("chown", "", Operands::AfterFirst),
    ("chgrp", "", Operands::AfterFirst),
    ("sed", "lef", Operands::AfterScript),
    ("perl", "eEIMmx", Operands::AfterScript),
];

/// Which operands of a [`PATH_WRITERS`] program it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operands {
    All,
    /// The destination (or the `-t DIR` value).
    Last,
    /// All but the first (a mode or an owner).
    AfterFirst,
    /// All but the first, unless a script option (`-e`, `-f`) gave the script.
    AfterScript,
}

/// The static file operands `program` writes, as [`PATH_WRITERS`] says.
fn written_operands(program: &str, rest: &[Word]) -> Vec<String> {
    let Some(&(_, valued, which)) = PATH_WRITERS.iter().find(|(p, _, _)| *p == program) else {
        return Vec::new();
    };
    let mut operands: Vec<&Word> = Vec::new();
    let mut target_dir = None;
    let mut script_given = false;
    let mut options = true;
    let mut words = rest.iter();
    while let Some(w) = words.next() {
        if options && w.text == "--" {
            options = false;
        } else if let Some(letters) = short_flags(&w.text).filter(|_| options) {
            // A valued option's value is the rest of the word, or the next word.
            if let Some((at, c)) = letters.char_indices().find(|(_, c)| valued.contains(*c)) {
                let value = if at + c.len_utf8() < letters.len() {
                    None
                } else {
                    words.next()
                };
                script_given |= matches!(c, 'e' | 'E' | 'f');
                if c == 't' {
                    target_dir = value;
                }
            }
        } else if !(options && w.text.starts_with("--")) {
            operands.push(w);
        }
    }
    let chosen: Vec<&Word> = match which {
        Operands::All => operands,
        Operands::Last => target_dir
            .into_iter()
            .chain(operands.last().copied())
            .take(1)
            .collect(),
        Operands::AfterFirst => operands.into_iter().skip(1).collect(),
        Operands::AfterScript => operands
            .into_iter()
            .skip(usize::from(!script_given))
            .collect(),
    };
    chosen
        .into_iter()
        .filter(|w| !w.dynamic && !w.text.is_empty())
        .map(|w| w.text.clone())
        .collect()
}

fn git_effect(args: &[&str]) -> Effect {
    let mut j = 0;
    while let Some(a) = args.get(j) {
        if GIT_VALUE_OPTIONS.contains(a) {
            j += 2;
        } else if a.starts_with('-') {
            j += 1;
        } else {
            break;
        }
    }
    let Some(sub) = args.get(j) else {
        return Effect::Unseen;
    };
    let rest = &args[j + 1..];
    let writes = GIT_WRITES.contains(sub)
        || match *sub {
            // Listing forms only: no name to create, no option that creates or deletes.
            "branch" => rest.iter().any(|a| {
                !a.starts_with('-')
                    || matches!(
                        *a,
                        "-d" | "-D"
                            | "-m"
                            | "-M"
                            | "-c"
                            | "-C"
                            | "-f"
                            | "-u"
                            | "--delete"
                            | "--move"
                            | "--copy"
                            | "--force"
                            | "--set-upstream-to"
                            | "--unset-upstream"
                            | "--edit-description"
                    )
            }),
            "tag" => {
                !rest.iter().any(|a| matches!(*a, "-l" | "--list"))
                    && rest.iter().any(|a| {
                        !a.starts_with('-')
                            || matches!(
                                *a,
                                "-a" | "-s"
                                    | "-d"
                                    | "-f"
                                    | "-u"
                                    | "-m"
                                    | "-F"
                                    | "--delete"
                                    | "--force"
                                    | "--annotate"
                                    | "--sign"
                            )
                    })
            }
            "config" => !rest
                .iter()
                .any(|a| a.starts_with("--get") || matches!(*a, "-l" | "--list" | "get" | "list")),
            _ => false,
        };
    if writes {
        Effect::Writes
    } else {
        Effect::Unseen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files a command names as written: what the lease check asks about.
    #[test]
    fn written_files_are_named_where_the_command_names_them() {
        for (cmd, paths) in [
            ("echo x > src/lib.rs", &["src/lib.rs"][..]),
            ("cat a >> log.txt 2>&1", &["log.txt"]),
            ("echo x > /dev/null", &[]),
            ("rm -rf build src/old.rs", &["build", "src/old.rs"]),
            ("rm -- -weird", &["-weird"]),
            ("mv a.rs b.rs", &["a.rs", "b.rs"]),
            ("cp -r src/a.rs src/b.rs", &["src/b.rs"]),
            ("cp -t dest a b", &["dest"]),
            ("ln -s target link", &["link"]),
            ("chmod +x run.sh", &["run.sh"]),
            ("chown -R me:me dir", &["dir"]),
            ("sed -i 's/a/b/' src/lib.rs", &["src/lib.rs"]),
            ("sed -i -e s/a/b/ -e s/c/d/ a b", &["a", "b"]),
            ("sed -ni.bak p f", &["f"]),
            ("perl -pi -e 's/a/b/' f", &["f"]),
            ("echo x | tee -a out.log", &["out.log"]),
            ("touch a && sh -c 'rm b'", &["a", "b"]),
            ("sudo -u root truncate -s 0 big.log", &["big.log"]),
            ("ls > $OUT", &[]),
            ("rm $F", &[]),
            ("cargo build", &[]),
            ("cat src/lib.rs", &[]),
        ] {
            let seen = classify(cmd);
            assert_eq!(seen.paths, paths, "{cmd}");
        }
        let many: String = (0..40).map(|i| format!("f{i} ")).collect();
        assert_eq!(classify(&format!("rm {many}")).paths.len(), MAX_PATHS);
    }

    #[test]
    fn writing_commands_are_seen_through_quoting_and_wrappers() {
        for cmd in [
            "rm -rf build",
            "'rm' -rf x",
            "\"rm\" -rf x",
            r"r\m -rf x",
            "/bin/rm x",
            "sh -c \"rm -rf x\"",
            "bash -lc 'cd a && rm -rf x'",
            "eval rm x",
            "find . -name '*.o' -delete",
            "find . -exec cat {} ;",
            "sed -i s/a/b/ f",
            "sed -ni.bak p f",
            "sed --in-place=.bak s/a/b/ f",
            "perl -pi -e s/a/b/ f",
            "perl -i.bak -pe s/a/b/ f",
            "curl -o out https://x",
            "curl -sSLO https://x",
            "curl --output=out https://x",
            "tar xzf a.tgz",
            "tar -xf a.tar",
            "tar --extract -f a.tar",
            "tar czf a.tgz dir",
            "npm i left-pad",
            "npm install",
            "cargo add serde",
            "python3 -m pip install x",
            "sudo -u root rm x",
            "env A=1 rm x",
            "xargs rm < list",
            "ls | xargs -n 1 rm",
            "echo x > f",
            "echo x >> f",
            "echo x &> f",
            "cat a 1> f",
            "echo $(rm x)",
            "echo `rm x`",
            "ls && git commit -m x",
            "git -C sub commit -m x",
            "git branch new-feature",
            "git config user.name x",
            "if true; then rm x; fi",
            "for f in a b; do rm $f; done",
            "FOO=1 mv a b",
            "timeout 10 rm x",
            "nice -n 5 cp a b",
            "wget https://x",
        ] {
            assert_eq!(effect(cmd), Effect::Writes, "{cmd}");
        }
    }

    #[test]
    fn what_cco_cannot_see_is_opaque() {
        for cmd in [
            "x=rm; $x -rf /",
            "$CMD x",
            "${X} x",
            "\"$x\" y",
            "r* x",
            "echo 'unterminated",
            "echo \"unterminated",
            "echo $(rm x",
            "python3 -c 'import os; os.remove(\"x\")'",
            "node -e 'x'",
            "perl -e 'unlink q(x)'",
            "ruby script.rb",
            "bash script.sh",
            "sh",
            "source env.sh",
            ". ./env.sh",
            "eval \"$X\"",
            "echo x >",
            "awk '{ system(\"rm x\") }' f",
        ] {
            assert_eq!(effect(cmd), Effect::Opaque, "{cmd}");
        }
    }

    #[test]
    fn reading_commands_are_not_flagged() {
        for cmd in [
            "ls -la",
            "cat a b 2>&1",
            "cargo test 2>/dev/null",
            "grep -rn 'rm -rf' src",
            "echo 'rm x'",
            "git status",
            "git log --oneline | head",
            "git branch",
            "git branch -a",
            "git tag",
            "git tag -l 'v*'",
            "git config --get user.name",
            "tar tzf a.tgz",
            "tar -tf a.tar",
            "curl -s https://x",
            "sed -n 1,5p f",
            "find . -name '*.rs'",
            "npm test",
            "cargo build",
            "echo hi # rm x",
            "wc -l < f",
            "cat <<EOF\nhello\nEOF",
        ] {
            assert_eq!(effect(cmd), Effect::Unseen, "{cmd}");
        }
    }
}
