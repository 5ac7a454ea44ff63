//! Basic-auth configuration, read as MLflow reads it: the INI file named by `MLFLOW_AUTH_CONFIG_PATH`
//! (section `[mlflow]`: `default_permission`, `database_uri`, `admin_username`, `admin_password`,
//! `authorization_function`, `auth_cache_ttl_seconds`), then `MLKUBE_ADMIN_USERNAME` /
//! `MLKUBE_ADMIN_PASSWORD` on top so a Kubernetes Secret can supply the admin credentials.
//!
//! Unlike MLflow there is no built-in admin password: starting without one, or with one shorter than
//! 12 characters or equal to MLflow's published defaults, is refused (CVE-2025-1474/11200).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::permissions::Permission;
use crate::error::ConfigError;

pub const CONFIG_PATH_ENV: &str = "MLFLOW_AUTH_CONFIG_PATH";
pub const ADMIN_USERNAME_ENV: &str = "MLKUBE_ADMIN_USERNAME";
pub const ADMIN_PASSWORD_ENV: &str = "MLKUBE_ADMIN_PASSWORD";
/// MLflow's only authorization function, the one this server implements.
pub const DEFAULT_AUTHORIZATION_FUNCTION: &str = "mlflow.server.auth:authenticate_request_basic_auth";
/// The shortest password accepted, for the admin and for users (MLflow 2.19+ uses the same bound).
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Passwords MLflow shipped in its default `basic_auth.ini`.
const PUBLISHED_DEFAULTS: [&str; 2] = ["password", "password1234"];

/// A secret string that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Basic-auth settings with every default resolved.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// What a user may do on an experiment or registered model without a permission row.
    pub default_permission: Permission,
    /// Where users and permissions live: `sqlite:///PATH`, `postgresql://…` or `mysql://…`.
    pub database_uri: String,
    pub admin_username: String,
    pub admin_password: Secret,
    /// The admin password came from `MLKUBE_ADMIN_PASSWORD`: it then overrides the stored one at
    /// startup (the Secret is the source of truth). From the INI file it only seeds a new admin.
    pub admin_password_from_env: bool,
    /// How long a verified username/password pair is remembered (0 turns the cache off).
    pub credential_cache_ttl: Duration,
    /// Failed logins allowed per username and per client address in a window.
    pub login_limits: super::lockout::LoginLimits,
}

impl AuthConfig {
    /// Settings for an embedded or test setup: no file, no environment.
    pub fn new(
        database_uri: impl Into<String>,
        admin_username: impl Into<String>,
        admin_password: impl Into<String>,
        default_permission: Permission,
    ) -> Result<Self, ConfigError> {
        let config = Self {
            default_permission,
            database_uri: database_uri.into(),
            admin_username: admin_username.into(),
            admin_password: Secret::new(admin_password),
            admin_password_from_env: false,
            credential_cache_ttl: Duration::from_secs(60),
            login_limits: super::lockout::LoginLimits::default(),
        };
        config.validate()?;
        Ok(config)
    }

    /// Read the INI file named by `MLFLOW_AUTH_CONFIG_PATH` (if any) and the env overrides, all
    /// through `env` so tests never touch the process environment.
    pub fn resolve(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let ini = match env(CONFIG_PATH_ENV).filter(|p| !p.is_empty()) {
            Some(path) => {
                let text = std::fs::read_to_string(Path::new(&path)).map_err(|e| {
                    ConfigError(format!(
                        "cannot read the basic-auth config {path} ({CONFIG_PATH_ENV}): {e}"
                    ))
                })?;
                let mut sections = parse_ini(&text).map_err(|e| ConfigError(format!("{path}: {e}")))?;
                let defaults = sections.remove("DEFAULT").unwrap_or_default();
                let mut mlflow = sections.remove("mlflow").ok_or_else(|| {
                    ConfigError(format!(
                        "{path}: no [mlflow] section (MLflow's basic-auth INI format)"
                    ))
                })?;
                for (key, value) in defaults {
                    mlflow.entry(key).or_insert(value);
                }
                mlflow
            }
            None => BTreeMap::new(),
        };
        Self::from_settings(&ini, env)
    }

    fn from_settings(
        ini: &BTreeMap<String, String>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let get = |key: &str| {
            ini.get(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let default_permission = match get("default_permission") {
            None => Permission::Read,
            Some(p) => Permission::parse(&p).ok_or_else(|| {
                ConfigError(format!(
                    "default_permission must be one of READ, EDIT, MANAGE, NO_PERMISSIONS, got {p:?}"
                ))
            })?,
        };
        if let Some(function) = get("authorization_function")
            && function != DEFAULT_AUTHORIZATION_FUNCTION
        {
            tracing::warn!(
                authorization_function = %function,
                "authorization_function is ignored: mlkube-server implements basic auth only"
            );
        }
        let credential_cache_ttl = match get("auth_cache_ttl_seconds") {
            None => Duration::from_secs(60),
            Some(s) => Duration::from_secs(s.parse().map_err(|_| {
                ConfigError(format!(
                    "auth_cache_ttl_seconds must be a whole number of seconds, got {s:?}"
                ))
            })?),
        };
        // MLflow has no such settings: ours, in the same file, with env overrides.
        let setting = |key: &str, env_key: &str| env(env_key).filter(|v| !v.is_empty()).or_else(|| get(key));
        let whole = |key: &str, value: String| {
            value
                .trim()
                .parse::<u64>()
                .map_err(|_| ConfigError(format!("{key} must be a whole number, got {value:?}")))
        };
        let defaults = super::lockout::LoginLimits::default();
        let login_limits = super::lockout::LoginLimits {
            max_failures: match setting("max_failed_logins", "MLKUBE_AUTH_MAX_FAILED_LOGINS") {
                None => defaults.max_failures,
                Some(v) => u32::try_from(whole("max_failed_logins", v)?).unwrap_or(u32::MAX),
            },
            window: match setting(
                "failed_login_window_seconds",
                "MLKUBE_AUTH_FAILED_LOGIN_WINDOW_SECONDS",
            ) {
                None => defaults.window,
                Some(v) => Duration::from_secs(whole("failed_login_window_seconds", v)?.max(1)),
            },
        };
        let env_password = env(ADMIN_PASSWORD_ENV).filter(|p| !p.is_empty());
        let config = Self {
            default_permission,
            database_uri: get("database_uri").unwrap_or_else(|| "sqlite:///basic_auth.db".to_owned()),
            admin_username: env(ADMIN_USERNAME_ENV)
                .filter(|u| !u.is_empty())
                .or_else(|| get("admin_username"))
                .unwrap_or_else(|| "admin".to_owned()),
            admin_password_from_env: env_password.is_some(),
            admin_password: Secret::new(
                env_password
                    .or_else(|| ini.get("admin_password").cloned())
                    .unwrap_or_default(),
            ),
            credential_cache_ttl,
            login_limits,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        validate_username(&self.admin_username)
            .map_err(|why| ConfigError(format!("admin username is invalid: {why}")))?;
        let password = self.admin_password.expose();
        if password.is_empty() {
            return Err(ConfigError(format!(
                "basic auth needs an admin password: set {ADMIN_PASSWORD_ENV} or admin_password in the \
                 {CONFIG_PATH_ENV} file"
            )));
        }
        if password.chars().count() < MIN_PASSWORD_CHARS || PUBLISHED_DEFAULTS.contains(&password) {
            return Err(ConfigError(format!(
                "the admin password is too weak: use at least {MIN_PASSWORD_CHARS} characters and not \
                 MLflow's published default"
            )));
        }
        if !(crate::db::sqlite_path(&self.database_uri).is_some()
            || crate::db::is_postgres_uri(&self.database_uri)
            || crate::db::is_mysql_uri(&self.database_uri))
        {
            return Err(ConfigError(format!(
                "database_uri must be sqlite:///PATH, postgresql://... or mysql://..., got {:?}",
                crate::store::redact_uri(&self.database_uri)
            )));
        }
        Ok(())
    }
}

/// A username must be usable in HTTP basic auth: not empty, no `:`, no control characters.
pub fn validate_username(username: &str) -> Result<(), &'static str> {
    if username.is_empty() {
        Err("it is empty")
    } else if username.contains(':') {
        Err("it may not contain ':'")
    } else if username.chars().any(char::is_control) {
        Err("it may not contain control characters")
    } else if username.chars().count() > 256 {
        Err("it is longer than 256 characters")
    } else {
        Ok(())
    }
}

/// Python `configparser`'s common subset: `[section]`, `key = value` or `key: value` (keys
/// lower-cased), full-line `#` / `;` comments, blank lines. Values keep inner spaces.
fn parse_ini(text: &str) -> Result<BTreeMap<String, BTreeMap<String, String>>, String> {
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim().to_owned();
            sections.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let Some(split) = line.find(['=', ':']) else {
            return Err(format!("line {}: expected `key = value`", n + 1));
        };
        let Some(section) = &current else {
            return Err(format!("line {}: setting outside a [section]", n + 1));
        };
        let key = line[..split].trim().to_lowercase();
        let value = line[split + 1..].trim().to_owned();
        sections.entry(section.clone()).or_default().insert(key, value);
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn ini_file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn failed_login_limits_from_ini_and_env() {
        let file = ini_file(
            "[mlflow]\nadmin_password = long-enough-pass\nmax_failed_logins = 3\nfailed_login_window_seconds = 60\n",
        );
        let path = file.path().display().to_string();
        let c = AuthConfig::resolve(&env_of(&[(CONFIG_PATH_ENV, &path)])).unwrap();
        assert_eq!(c.login_limits.max_failures, 3);
        assert_eq!(c.login_limits.window, Duration::from_secs(60));
        let c = AuthConfig::resolve(&env_of(&[
            (CONFIG_PATH_ENV, &path),
            ("MLKUBE_AUTH_MAX_FAILED_LOGINS", "0"),
        ]))
        .unwrap();
        assert_eq!(c.login_limits.max_failures, 0, "0 turns limiting off");
        let bad = ini_file("[mlflow]\nadmin_password = long-enough-pass\nmax_failed_logins = many\n");
        let bad_path = bad.path().display().to_string();
        assert!(AuthConfig::resolve(&env_of(&[(CONFIG_PATH_ENV, &bad_path)])).is_err());
        let defaults =
            AuthConfig::new("sqlite:///a.db", "admin", "long-enough-pass", Permission::Read).unwrap();
        assert_eq!(defaults.login_limits.max_failures, 10);
    }

    #[test]
    fn reads_mlflow_ini_and_env_overrides() {
        let file = ini_file(
            "# comment\n[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = sqlite:////tmp/auth.db\n\
             admin_username = root\nadmin_password = from-the-ini-file\n\
             authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
        );
        let path = file.path().display().to_string();
        let c = AuthConfig::resolve(&env_of(&[(CONFIG_PATH_ENV, &path)])).unwrap();
        assert_eq!(c.default_permission, Permission::NoPermissions);
        assert_eq!(c.database_uri, "sqlite:////tmp/auth.db");
        assert_eq!(c.admin_username, "root");
        assert_eq!(c.admin_password.expose(), "from-the-ini-file");
        assert!(!c.admin_password_from_env);

        let c = AuthConfig::resolve(&env_of(&[
            (CONFIG_PATH_ENV, &path),
            (ADMIN_USERNAME_ENV, "ops"),
            (ADMIN_PASSWORD_ENV, "from-a-kubernetes-secret"),
        ]))
        .unwrap();
        assert_eq!(c.admin_username, "ops");
        assert_eq!(c.admin_password.expose(), "from-a-kubernetes-secret");
        assert!(c.admin_password_from_env);
        assert!(
            !format!("{c:?}").contains("kubernetes-secret"),
            "password in Debug"
        );
    }

    #[test]
    fn defaults_without_a_file() {
        let c = AuthConfig::resolve(&env_of(&[(ADMIN_PASSWORD_ENV, "a-long-enough-secret")])).unwrap();
        assert_eq!(c.default_permission, Permission::Read);
        assert_eq!(c.database_uri, "sqlite:///basic_auth.db");
        assert_eq!(c.admin_username, "admin");
        assert_eq!(c.credential_cache_ttl, Duration::from_secs(60));
    }

    #[test]
    fn weak_or_missing_admin_passwords_are_refused() {
        let no_password = AuthConfig::resolve(&env_of(&[])).unwrap_err();
        assert!(no_password.0.contains(ADMIN_PASSWORD_ENV), "{no_password}");
        for weak in ["short", "password1234", "password"] {
            let err = AuthConfig::resolve(&env_of(&[(ADMIN_PASSWORD_ENV, weak)])).unwrap_err();
            assert!(err.0.contains("too weak"), "{err}");
            assert!(
                weak == "password" || !err.0.contains(weak),
                "the password must not be echoed: {err}"
            );
        }
        // MLflow's shipped INI (admin_password = password) is refused too.
        let file = ini_file("[mlflow]\nadmin_username = admin\nadmin_password = password\n");
        let path = file.path().display().to_string();
        assert!(AuthConfig::resolve(&env_of(&[(CONFIG_PATH_ENV, &path)])).is_err());
    }

    #[test]
    fn bad_files_and_values_are_refused() {
        let missing = env_of(&[(CONFIG_PATH_ENV, "/nonexistent/basic_auth.ini")]);
        assert!(AuthConfig::resolve(&missing).is_err());
        for text in [
            "[other]\nadmin_password = long-enough-password\n",
            "[mlflow]\nnot a setting\n",
            "admin_password = long-enough-password\n",
            "[mlflow]\ndefault_permission = OWNER\nadmin_password = long-enough-password\n",
            "[mlflow]\ndatabase_uri = oracle://x/y\nadmin_password = long-enough-password\n",
            "[mlflow]\nadmin_username = a:b\nadmin_password = long-enough-password\n",
            "[mlflow]\nauth_cache_ttl_seconds = soon\nadmin_password = long-enough-password\n",
        ] {
            let file = ini_file(text);
            let path = file.path().display().to_string();
            assert!(
                AuthConfig::resolve(&env_of(&[(CONFIG_PATH_ENV, &path)])).is_err(),
                "accepted {text:?}"
            );
        }
        // Every engine the server stores in is a valid auth database, MySQL included.
        let file = ini_file(
            "[mlflow]\ndatabase_uri = mysql+pymysql://u:p@h/auth\nadmin_password = long-enough-password\n",
        );
        let path = file.path().display().to_string();
        assert!(AuthConfig::resolve(&env_of(&[(CONFIG_PATH_ENV, &path)])).is_ok());
    }

    #[test]
    fn ini_subset() {
        let s = parse_ini("[DEFAULT]\nA: 1\n; c\n[mlflow]\nkey = a = b\n").unwrap();
        assert_eq!(s["DEFAULT"]["a"], "1");
        assert_eq!(s["mlflow"]["key"], "a = b");
    }
}
