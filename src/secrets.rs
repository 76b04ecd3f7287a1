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
];

/// Whether the text of the file named `name` contains something that looks like a
/// credential: a private key block, a cloud/forge/chat token, or a literal password in a
/// config file.
pub fn looks_secret(name: &str, text: &str) -> bool {
    let lower_name = name.to_ascii_lowercase();
    let config = CONFIG_EXTENSIONS.iter().any(|e| lower_name.ends_with(e));
    private_key_block(text)
        || prefixed(text, &["AKIA", "ASIA"], 16, |b| {
            b.is_ascii_uppercase() || b.is_ascii_digit()
        })
        || prefixed(text, &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"], 20, |b| {
            b.is_ascii_alphanumeric()
        })
        || prefixed(text, &["github_pat_"], 20, |b| {
            b.is_ascii_alphanumeric() || b == b'_'
        })
        || prefixed(
            text,
            &["xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-"],
            8,
            |b| b.is_ascii_alphanumeric() || b == b'-',
        )
        || prefixed(text, &["ya29."], 20, |b| {
            b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
        })
        || prefixed(text, &["AIza"], 35, |b| {
            b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
        })
        || prefixed(text, &["sk_live_", "rk_live_"], 16, |b| {
            b.is_ascii_alphanumeric()
        })
        // Anthropic, OpenAI project/service keys, GitLab personal access tokens.
        || prefixed(
            text,
            &["sk-ant-", "sk-proj-", "sk-svcacct-", "glpat-"],
            20,
            |b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-',
        )
        // OpenAI's older keys: `sk-` and 48 letters and digits.
        || prefixed(text, &["sk-"], 40, |b| b.is_ascii_alphanumeric())
        || prefixed(text, &["npm_"], 36, |b| b.is_ascii_alphanumeric())
        // Slack incoming webhooks: the URL is the credential.
        || prefixed(text, &["hooks.slack.com/services/"], 20, |b| {
            b.is_ascii_alphanumeric() || b == b'/'
        })
        || json_private_key(text)
        || registry_token(text)
        || (config && password_assignment(text))
}

/// `-----BEGIN … PRIVATE KEY-----` (RSA, EC, OPENSSH, ENCRYPTED, PGP … BLOCK).
fn private_key_block(text: &str) -> bool {
    text.match_indices("-----BEGIN ").any(|(i, m)| {
        let rest = &text[i + m.len()..];
        let line = rest.split('\n').next().unwrap_or(rest);
        line.contains("PRIVATE KEY")
    })
}

/// `prefix` at a word start followed by at least `min` bytes accepted by `body`.
fn prefixed(text: &str, prefixes: &[&str], min: usize, body: fn(u8) -> bool) -> bool {
    let bytes = text.as_bytes();
    prefixes.iter().any(|p| {
        text.match_indices(p).any(|(i, _)| {
            let at_word_start = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
            let run = bytes[i + p.len()..]
                .iter()
                .take_while(|b| body(**b))
                .count();
            at_word_start && run >= min
        })
    })
}

/// `"private_key": …` (Google service-account keys and the like).
fn json_private_key(text: &str) -> bool {
    text.match_indices("\"private_key\"").any(|(i, m)| {
        text[i + m.len()..]
            .trim_start_matches([' ', '\t'])
            .starts_with(':')
    })
}

/// `password = value`, `db_password: value`, `"password": "value"` — not placeholders such
/// as `${DB_PASSWORD}`, `{{ vault }}`, `""` or `null`.
fn password_assignment(text: &str) -> bool {
    assignment(&text.to_ascii_lowercase(), "password")
}

/// A package registry's credential in any file (`.npmrc` lines copied into docs, CI
/// scripts, Dockerfiles): `//registry/:_authToken=…`, `_auth=…`, yarn's `npmAuthToken: …`.
fn registry_token(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    ["_authtoken", "_auth", "npmauthtoken"]
        .iter()
        .any(|key| assignment(&lower, key))
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
            || ["${", "{{", "\"\"", "''", "null", "~", "<", "$("]
                .iter()
                .any(|p| first.starts_with(p));
        !placeholder
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
