//! What cco never serves to an agent (context) or auto-allows it to read (`PreToolUse`): files whose name says "credential" (never listed,
//! never read) and files whose text looks like one (listed as withheld, content dropped).
//! Plain string scanning; a false positive costs an agent one file, a miss leaks a key.

/// Why a matching file's content was left out.
pub const WITHHELD: &str = "looks like a secret";

/// Extensions of files that may hold keys or key stores.
const SECRET_EXTENSIONS: &[&str] = &[
    ".pem",
    ".key",
    ".p12",
    ".pfx",
    ".jks",
    ".keystore",
    ".kdbx",
    ".gpg",
    ".asc",
    ".ppk",
    ".ovpn",
    ".keytab",
    ".tfvars",
    ".tfvars.json",
];

/// Names (lower case) that are secret wherever they appear, files or directories.
const SECRET_NAMES: &[&str] = &[
    ".envrc",
    ".netrc",
    "_netrc",
    ".npmrc",
    ".pypirc",
    ".pgpass",
    ".my.cnf",
    ".git-credentials",
    ".htpasswd",
    ".dockercfg",
    ".dev.vars",
    "local.settings.json",
    ".ssh",
    ".aws",
    ".gnupg",
    ".docker",
    ".kube",
    ".azure",
    ".git",
];

/// Source-code extensions: `secret.rs` is a module about secrets, `secret.yaml` holds some.
const CODE_EXTENSIONS: &[&str] = &[
    ".rs", ".py", ".go", ".ts", ".tsx", ".js", ".jsx", ".java", ".kt", ".rb", ".swift", ".cs",
    ".php", ".c", ".h", ".cc", ".cpp", ".hpp", ".md",
];

/// A file or directory name that is never listed nor read: env files, keys, key stores,
/// cloud credentials and state, credential directories.
pub fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let n = lower.as_str();
    let is_code = CODE_EXTENSIONS.iter().any(|e| n.ends_with(e));
    // .env, .env.local, .envrc, prod.env, prod.env.bak
    n.starts_with(".env")
        || n.ends_with(".env")
        || n.contains(".env.")
        || SECRET_NAMES.contains(&n)
        || SECRET_EXTENSIONS.iter().any(|e| n.ends_with(e))
        // terraform.tfstate, terraform.tfstate.backup
        || n.contains(".tfstate")
        || n.starts_with("kubeconfig")
        || is_ssh_key(n)
        || n.starts_with("credentials")
        || n.starts_with("secrets")
        || (n.starts_with("secret") && !is_code)
        || (n.starts_with("credential") && !is_code)
        || (n.ends_with(".json")
            && (n.contains("token")
                || n.contains("secret")
                || n.contains("credential")
                || n.contains("service-account")
                || n.contains("service_account")
                || n.ends_with("-key.json")
                || n.ends_with("_key.json")
                || n.ends_with(".key.json")))
}

/// `id_rsa`, `id_ed25519_sk.pub`, `id_work` — but not `id_map.rs`.
fn is_ssh_key(n: &str) -> bool {
    let Some(rest) = n.strip_prefix("id_") else {
        return false;
    };
    ["rsa", "dsa", "ecdsa", "ed25519"]
        .iter()
        .any(|k| rest.starts_with(k))
        || !rest.contains('.')
}

/// Whether any component of a `/`-separated relative path is secret.
pub fn is_secret_path(path: &str) -> bool {
    path.split('/').any(is_secret_name)
}

/// Config-like files, where `password: value` is a literal credential.
const CONFIG_EXTENSIONS: &[&str] = &[
    ".yml",
    ".yaml",
    ".json",
    ".toml",
    ".ini",
    ".conf",
    ".cfg",
    ".properties",
    ".tf",
    ".hcl",
    ".cnf",
    ".config",
    ".xml",
];

/// A vendor token: one of its prefixes at a word start, then at least `min` bytes that
/// `body` accepts.
type Token = (&'static [&'static str], usize, fn(u8) -> bool);
/// A content check and the literals (any case) it starts from.
type Check = (&'static [&'static str], fn(&str) -> bool);

const TOKENS: &[Token] = &[
    (&["AKIA", "ASIA"], 16, |b| {
        b.is_ascii_uppercase() || b.is_ascii_digit()
    }),
    (&["ghp_", "gho_", "ghu_", "ghs_", "ghr_"], 20, |b| {
        b.is_ascii_alphanumeric()
    }),
    (&["github_pat_"], 20, |b| {
        b.is_ascii_alphanumeric() || b == b'_'
    }),
    (&["xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-"], 8, |b| {
        b.is_ascii_alphanumeric() || b == b'-'
    }),
    (&["ya29."], 20, |b| {
        b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
    }),
    (&["AIza"], 35, |b| {
        b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
    }),
    (&["sk_live_", "rk_live_"], 16, |b| b.is_ascii_alphanumeric()),
    // Anthropic, OpenAI project/service keys, GitLab personal access tokens.
    (&["sk-ant-", "sk-proj-", "sk-svcacct-", "glpat-"], 20, |b| {
        b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
    }),
    // OpenAI's older keys: `sk-` and 48 letters and digits.
    (&["sk-"], 40, |b| b.is_ascii_alphanumeric()),
    (&["npm_"], 36, |b| b.is_ascii_alphanumeric()),
    // Slack incoming webhooks: the URL is the credential.
    (&["hooks.slack.com/services/"], 20, |b| {
        b.is_ascii_alphanumeric() || b == b'/'
    }),
    // Hugging Face, SendGrid, DigitalOcean (personal, OAuth, refresh).
    (&["hf_"], 30, |b| b.is_ascii_alphanumeric()),
    (&["SG."], 60, |b| {
        b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'
    }),
    (&["dop_v1_", "doo_v1_", "dor_v1_"], 64, |b| {
        b.is_ascii_hexdigit()
    }),
];

/// The other content checks.
const CHECKS: &[Check] = &[
    (&[KEY_BLOCK], private_key_block),
    (&[JSON_KEY], json_private_key),
    (&REGISTRY_KEYS, registry_token),
    (&AWS_KEYS, aws_secret_key),
    (&[URL_MARK], url_credentials),
    (&AZURE_KEYS, azure_key),
    (&XML_TAGS, xml_password),
    (&DOCKER_KEYS, docker_auth),
];

/// Every literal the checks start from, found in one case-insensitive pass over the text:
/// a check runs only when one of its literals is there, so a file is read once rather than
/// once per literal (this runs on every `Read` the PreToolUse policy may allow, up to 1 MiB).
static LITERALS: std::sync::LazyLock<(Vec<&'static str>, aho_corasick::AhoCorasick)> =
    std::sync::LazyLock::new(|| {
        let all: Vec<&'static str> = TOKENS
            .iter()
            .flat_map(|(prefixes, _, _)| prefixes.iter())
            .chain(CHECKS.iter().flat_map(|(literals, _)| literals.iter()))
            .chain(PASSWORD_KEYS.iter())
            .copied()
            .collect();
        let scanner = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&all)
            .expect("the literals build an automaton");
        (all, scanner)
    });

/// Below this many bytes every check simply runs: building the automaton (~0.7 ms, once per
/// process — a command hook is one process per call) costs more than the checks' own
/// passes over a small file.
const SCAN_FROM: usize = 16 * 1024;

/// Which of [`LITERALS`] one text holds (for a small text: all of them, unlooked).
struct Found(Option<Vec<bool>>);

impl Found {
    fn scan(text: &str) -> Found {
        if text.len() < SCAN_FROM {
            return Found(None);
        }
        let (all, scanner) = &*LITERALS;
        let mut found = vec![false; all.len()];
        for m in scanner.find_overlapping_iter(text) {
            found[m.pattern().as_usize()] = true;
        }
        Found(Some(found))
    }

    /// Whether the text may hold any of `literals` (in any case).
    fn any(&self, literals: &[&str]) -> bool {
        let Some(found) = &self.0 else { return true };
        let all = &LITERALS.0;
        literals.iter().any(|l| {
            all.iter()
                .zip(found)
                .any(|(x, &found)| found && x.eq_ignore_ascii_case(l))
        })
    }
}

/// Whether the text of the file named `name` contains something that looks like a
/// credential: a private key block, a cloud/forge/chat token, or a literal password in a
/// config file.
pub fn looks_secret(name: &str, text: &str) -> bool {
    let lower_name = name.to_ascii_lowercase();
    let config = CONFIG_EXTENSIONS.iter().any(|e| lower_name.ends_with(e));
    let found = Found::scan(text);
    TOKENS.iter().any(|(prefixes, min, body)| {
        prefixes
            .iter()
            .filter(|p| found.any(&[p]))
            .any(|p| prefixed(text, p, *min, *body))
    }) || CHECKS
        .iter()
        .any(|(literals, check)| found.any(literals) && check(text))
        || pgpass_line(text)
        || (config && found.any(&PASSWORD_KEYS) && password_assignment(text))
}

fn base64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_')
}

/// The value assigned to `key` (lower case) anywhere in `lower`, quotes and blanks around
/// `:`/`=` skipped: every such value's first `len` bytes accepted by `body`, then the end.
fn keyed_values<'a>(lower: &'a str, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    lower.match_indices(key).filter_map(move |(i, m)| {
        let rest = lower[i + m.len()..].trim_start_matches(['"', '\'', ' ', '\t']);
        let rest = rest.strip_prefix([':', '='])?;
        Some(rest.trim_start_matches([' ', '\t', '"', '\'']))
    })
}

/// An AWS secret access key given without its key id: 40 base64 characters assigned to a
/// key that names it (`aws_secret_access_key`, `"SecretAccessKey":`, `AWS_SECRET=`).
const AWS_KEYS: [&str; 4] = [
    "secret_access_key",
    "secretaccesskey",
    "aws_secret",
    "secret_key",
];
fn aws_secret_key(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    AWS_KEYS.iter().any(|key| {
        keyed_values(&lower, key)
            .any(|v| v.bytes().take_while(|b| base64_char(*b)).count() == AWS_SECRET_LEN)
    })
}
const AWS_SECRET_LEN: usize = 40;

/// Passwords that documentation writes in place of one.
fn placeholder_password(p: &str) -> bool {
    let lower = p.to_ascii_lowercase();
    p.is_empty()
        || p.starts_with(['$', '{', '<', '[', '%', '*'])
        || p.bytes()
            .all(|b| b == b'x' || b == b'X' || b == b'*' || b == b'.')
        || [
            "password",
            "pass",
            "passwd",
            "pwd",
            "secret",
            "changeme",
            "your_password",
            "yourpassword",
            "mypassword",
        ]
        .contains(&lower.as_str())
}

/// `scheme://user:password@host` (databases, queues, git remotes): the password is literal.
const URL_MARK: &str = "://";
fn url_credentials(text: &str) -> bool {
    text.match_indices(URL_MARK).any(|(i, m)| {
        let rest = &text[i + m.len()..];
        let end = rest
            .find(|c: char| c == '/' || c == '@' || c.is_whitespace() || "\"'`<>".contains(c))
            .unwrap_or(rest.len());
        if !rest[end..].starts_with('@') {
            return false;
        }
        rest[..end]
            .split_once(':')
            .is_some_and(|(user, pass)| !user.is_empty() && !placeholder_password(pass))
    })
}

/// Azure storage / service bus connection strings: `AccountKey=…`, `SharedAccessKey=…`.
const AZURE_KEYS: [&str; 2] = ["accountkey=", "sharedaccesskey="];
fn azure_key(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    AZURE_KEYS.iter().any(|key| {
        lower.match_indices(key).any(|(i, m)| {
            lower[i + m.len()..]
                .bytes()
                .take_while(|b| base64_char(*b))
                .count()
                >= AZURE_KEY_MIN
        })
    })
}
const AZURE_KEY_MIN: usize = 20;

/// `<password>…</password>` (Maven `settings.xml`, NuGet, app configs), not `${…}`.
const XML_TAGS: [&str; 2] = ["<password>", "<passphrase>"];
fn xml_password(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    XML_TAGS.iter().any(|tag| {
        lower.match_indices(tag).any(|(i, m)| {
            let value = &text[i + m.len()..];
            let value = value.split('<').next().unwrap_or("").trim();
            !placeholder_password(value)
        })
    })
}

/// Docker's `config.json`: `"auths": {"registry": {"auth": "<base64 user:pass>"}}`, and
/// `identitytoken`.
const DOCKER_KEYS: [&str; 2] = ["\"auth\"", "\"identitytoken\""];
fn docker_auth(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    DOCKER_KEYS.iter().any(|key| {
        lower.match_indices(key).any(|(i, m)| {
            let rest = lower[i + m.len()..].trim_start_matches([' ', '\t']);
            let Some(rest) = rest.strip_prefix(':') else {
                return false;
            };
            let Some(value) = rest.trim_start().strip_prefix('"') else {
                return false;
            };
            value.bytes().take_while(|b| base64_char(*b)).count() >= DOCKER_AUTH_MIN
        })
    })
}
const DOCKER_AUTH_MIN: usize = 8;

/// A `.pgpass` line copied anywhere: `host:port:database:user:password`, the port a number
/// or `*`, no blanks.
fn pgpass_line(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.contains(char::is_whitespace) {
            return false;
        }
        let f: Vec<&str> = line.split(':').collect();
        f.len() == 5
            && f.iter().all(|x| !x.is_empty())
            && (f[1] == "*" || f[1].bytes().all(|b| b.is_ascii_digit()))
            && f[0]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-*_".contains(&b))
            && !placeholder_password(f[4])
    })
}

/// `-----BEGIN … PRIVATE KEY-----` (RSA, EC, OPENSSH, ENCRYPTED, PGP … BLOCK).
const KEY_BLOCK: &str = "-----BEGIN ";
fn private_key_block(text: &str) -> bool {
    text.match_indices(KEY_BLOCK).any(|(i, m)| {
        let rest = &text[i + m.len()..];
        let line = rest.split('\n').next().unwrap_or(rest);
        line.contains("PRIVATE KEY")
    })
}

/// `prefix` at a word start followed by at least `min` bytes accepted by `body`.
fn prefixed(text: &str, prefix: &str, min: usize, body: fn(u8) -> bool) -> bool {
    let bytes = text.as_bytes();
    text.match_indices(prefix).any(|(i, _)| {
        let at_word_start = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        let run = bytes[i + prefix.len()..]
            .iter()
            .take_while(|b| body(**b))
            .count();
        at_word_start && run >= min
    })
}

/// `"private_key": …` (Google service-account keys and the like).
const JSON_KEY: &str = "\"private_key\"";
fn json_private_key(text: &str) -> bool {
    text.match_indices(JSON_KEY).any(|(i, m)| {
        text[i + m.len()..]
            .trim_start_matches([' ', '\t'])
            .starts_with(':')
    })
}

/// `password = value`, `db_password: value`, `"password": "value"` — not placeholders such
/// as `${DB_PASSWORD}`, `{{ vault }}`, `""` or `null`.
const PASSWORD_KEYS: [&str; 3] = ["password", "passwd", "passphrase"];
fn password_assignment(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    PASSWORD_KEYS.iter().any(|key| assignment(&lower, key))
}

/// A package registry's credential in any file (`.npmrc` lines copied into docs, CI
/// scripts, Dockerfiles): `//registry/:_authToken=…`, `_auth=…`, yarn's `npmAuthToken: …`.
const REGISTRY_KEYS: [&str; 3] = ["_authtoken", "_auth", "npmauthtoken"];
fn registry_token(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    REGISTRY_KEYS.iter().any(|key| assignment(&lower, key))
}

/// `key` (lower case, in lower-cased `lower`) assigned a literal value with `=` or `:`.
fn assignment(lower: &str, key: &str) -> bool {
    lower.match_indices(key).any(|(i, m)| {
        let rest = lower[i + m.len()..].trim_start_matches(['"', '\'']);
        let rest = rest.trim_start_matches([' ', '\t']);
        let Some(rest) = rest.strip_prefix([':', '=']) else {
            return false;
        };
        let value = rest.trim_start_matches([' ', '\t']);
        let first = value.split(['\n', '\r']).next().unwrap_or("").trim_end();
        let placeholder = first.is_empty()
            // The last ones are Terraform references, not literals.
            || ["${", "{{", "\"\"", "''", "null", "~", "<", "$(", "var.", "local.", "data.", "module.", "random_"]
                .iter()
                .any(|p| first.starts_with(p));
        !placeholder
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass scan gates every check: each literal, in any case, lets its check run.
    #[test]
    fn every_check_runs_when_its_literal_is_there() {
        let literals = TOKENS
            .iter()
            .flat_map(|(l, _, _)| l.iter())
            .chain(CHECKS.iter().flat_map(|(l, _)| l.iter()))
            .chain(PASSWORD_KEYS.iter());
        let pad = ".".repeat(SCAN_FROM);
        for l in literals {
            for text in [l.to_string(), l.to_ascii_uppercase(), format!("x {l} y")] {
                let text = format!("{pad}{text}");
                assert!(Found::scan(&text).any(&[l]), "{l} not found");
            }
            assert!(!Found::scan(&format!("{pad}plain text")).any(&[l]), "{l}");
            assert!(
                Found::scan("plain text").any(&[l]),
                "a small text is checked whole"
            );
        }
        // Far into a large file, as found as at its start.
        let padded = format!("{}AKIAABCDEFGHIJKLMNOP\n", "x = 1\n".repeat(150_000));
        assert!(looks_secret("main.rs", &padded));
    }

    #[test]
    fn secret_names() {
        for n in [
            ".env",
            ".env.local",
            ".envrc",
            "prod.env",
            "prod.env.bak",
            "prod.tfvars",
            "prod.tfvars.json",
            "terraform.tfstate",
            "terraform.tfstate.backup",
            "token.json",
            "tokens.json",
            "client_secret.json",
            "gcp-credentials.json",
            "gcp-sa-key.json",
            "api_key.json",
            "my-service-account.json",
            "kubeconfig",
            ".kube",
            ".dev.vars",
            "local.settings.json",
            "client.ovpn",
            ".netrc",
            ".npmrc",
            ".pypirc",
            "id_rsa",
            "id_ed25519.pub",
            "id_work",
            "server.pem",
            "tls.key",
            "cert.p12",
            "cert.pfx",
            "store.jks",
            "credentials",
            "credentials.json",
            "secrets.yaml",
            "secrets",
            "secret.yaml",
            ".aws",
            ".ssh",
            ".gnupg",
            "vault.kdbx",
            "Prod.ENV",
        ] {
            assert!(is_secret_name(n), "{n} not secret");
        }
        for n in [
            "main.rs",
            "secret.rs",
            "environment.ts",
            "id_map.rs",
            "README.md",
            "config.yml",
            "package.json",
            "tsconfig.json",
            "keyboard.c",
            "Cargo.toml",
        ] {
            assert!(!is_secret_name(n), "{n} secret");
        }
        assert!(is_secret_path("home/.aws/config"));
        assert!(is_secret_path("k8s/secret.yaml"));
        assert!(!is_secret_path("src/secret.rs"));
    }

    #[test]
    fn vendor_tokens_and_registry_credentials() {
        let yes = [
            (
                "anthropic",
                "ANTHROPIC_API_KEY=sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abc",
            ),
            (
                "openai project",
                "key: sk-proj-AbCdEfGhIjKlMnOpQrSt_UvWxYz0123456789",
            ),
            (
                "openai legacy",
                "OPENAI_API_KEY=\"sk-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKl\"",
            ),
            (
                "gitlab",
                "git clone https://oauth2:glpat-AbCdEfGhIjKlMnOpQrSt@gitlab.com/x",
            ),
            ("npm", "NPM_TOKEN=npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
            (
                "slack webhook",
                "url = https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
            ),
            (
                "npmrc token",
                "//registry.npmjs.org/:_authToken=abcdef-0123",
            ),
            ("npmrc auth", "_auth = dXNlcjpwYXNz"),
            ("yarnrc", "npmAuthToken: \"abcdef0123\""),
        ];
        for (what, text) in yes {
            assert!(looks_secret("notes.txt", text), "{what}: {text}");
            assert!(looks_secret("Dockerfile", text), "{what}: {text}");
        }
        let no = [
            ("a word", "task-management and sk-learn"),
            ("short sk-", "sk-1234"),
            (
                "prefix inside a word",
                "disk-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKl",
            ),
            ("npm_ short", "npm_install_flags"),
            (
                "slack docs",
                "post to hooks.slack.com/services/ with your URL",
            ),
            (
                "npmrc placeholder",
                "//registry.npmjs.org/:_authToken=${NPM_TOKEN}",
            ),
            ("npmrc empty", "_authToken="),
            ("prose", "the _auth field and _authToken setting"),
        ];
        for (what, text) in no {
            assert!(!looks_secret("notes.txt", text), "{what}: {text}");
        }
        assert!(is_secret_name(".npmrc") && is_secret_name(".dockercfg"));
    }

    #[test]
    fn secret_contents() {
        let yes = [
            ("a.txt", "x\n-----BEGIN RSA PRIVATE KEY-----\nMII"),
            ("a.txt", "-----BEGIN OPENSSH PRIVATE KEY-----"),
            ("a.py", "KEY = 'AKIAIOSFODNN7EXAMPLE'"),
            ("a.sh", "export T=ghp_abcdefghijklmnopqrstuvwxyz0123"),
            ("a.sh", "github_pat_11ABCDEFG0123456789_abcdefghij"),
            ("a.js", "const t = 'xoxb-1234567890-abcdef';"),
            (
                "a.json",
                "{\"type\": \"service_account\", \"private_key\" : \"x\"}",
            ),
            (
                "a.txt",
                "Authorization: Bearer ya29.a0AfH6SMBx1234567890abcdef",
            ),
            ("config.yml", "db:\n  password: hunter2\n"),
            ("app.ini", "PASSWORD=hunter2"),
            ("a.json", "{\"db_password\": \"hunter2\"}"),
            ("a.toml", "password = \"hunter2\""),
        ];
        for (name, text) in yes {
            assert!(looks_secret(name, text), "{name}: {text}");
        }
        let no = [
            ("a.rs", "fn main() {}"),
            ("a.md", "-----BEGIN PUBLIC KEY-----"),
            ("a.md", "see https://AKIA.example"),
            ("a.rs", "let password = read_password();"),
            ("config.yml", "password: ${DB_PASSWORD}\n"),
            ("config.yml", "password: \"\"\n"),
            ("config.yml", "password:\n"),
            ("a.json", "{\"password\": null}"),
            ("a.md", "the password field"),
        ];
        for (name, text) in no {
            assert!(!looks_secret(name, text), "{name}: {text}");
        }
    }

    /// Issue 15: credentials in innocently named files, one case per pattern.
    #[test]
    fn credentials_in_innocent_files() {
        let yes = [
            (
                "aws secret without key id",
                "settings.py",
                "AWS_SECRET_ACCESS_KEY = \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"",
            ),
            (
                "aws secret in json",
                "out.json",
                "{\"SecretAccessKey\": \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"}",
            ),
            (
                "postgres url",
                "db.py",
                "DSN = 'postgres://app:S3cr3tPw@db.internal:5432/prod'",
            ),
            (
                "mongodb url",
                "README.md",
                "mongodb+srv://admin:hunter2@cluster0.example.net/",
            ),
            ("terraform", "main.tf", "  password = \"S3cr3tPw\"\n"),
            (
                "maven settings",
                "settings.xml",
                "<server><id>x</id><username>u</username><password>S3cr3tPw</password></server>",
            ),
            (
                "docker config",
                "config.json",
                "{\"auths\": {\"ghcr.io\": {\"auth\": \"dXNlcjpTM2NyM3RQdw==\"}}}",
            ),
            ("passwd in conf", "app.conf", "passwd = S3cr3tPw\n"),
            (
                "hugging face",
                "train.py",
                "token = 'hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567'",
            ),
            (
                "sendgrid",
                "mail.js",
                "const k = 'SG.AbCdEfGhIjKlMnOpQrStUv.AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg';",
            ),
            (
                "digitalocean",
                "deploy.sh",
                "DO_TOKEN=dop_v1_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            ),
            (
                "azure",
                "appsettings.txt",
                "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/==;",
            ),
            (
                "pgpass line",
                "notes.txt",
                "db.internal:5432:prod:app:S3cr3tPw\n",
            ),
        ];
        for (what, name, text) in yes {
            assert!(looks_secret(name, text), "{what}: {text}");
        }
    }

    /// Ordinary code, docs and configs that only mention these things stay readable.
    #[test]
    fn ordinary_text_is_not_flagged() {
        let no = [
            (
                "settings.py",
                "AWS_SECRET_ACCESS_KEY = os.environ['AWS_SECRET_ACCESS_KEY']",
            ),
            (
                "a.rs",
                "let url = format!(\"postgres://{user}:{pass}@{host}/db\");",
            ),
            (
                "README.md",
                "Set DATABASE_URL=postgres://user:password@localhost/db",
            ),
            (
                "README.md",
                "connect to postgres://localhost:5432/db as ${USER}",
            ),
            ("a.rs", "let u = \"https://example.com:8443/path\";"),
            ("main.tf", "  password = var.db_password\n"),
            ("main.tf", "  password = random_password.db.result\n"),
            ("settings.xml", "<password>${env.MAVEN_PASSWORD}</password>"),
            (
                "config.json",
                "{\"auth\": \"\", \"credsStore\": \"desktop\"}",
            ),
            ("a.py", "import huggingface_hub  # hf_hub_download"),
            ("a.py", "x = np.SG.fit()"),
            ("a.md", "AccountKey=<your key>"),
            ("a.txt", "12:30:45 started"),
            ("a.txt", "2024-01-01T10:00:00Z"),
            ("a.rs", "use std::collections::HashMap;"),
            ("a.rs", "fn passwd(user: &str) -> Option<String> { None }"),
            ("a.py", "SECRET_KEY = get_random_secret_key()"),
            ("a.c", "std::vector<int>::iterator it;"),
        ];
        for (name, text) in no {
            assert!(!looks_secret(name, text), "{name}: {text}");
        }
    }
}
