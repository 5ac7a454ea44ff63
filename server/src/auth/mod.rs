//! MLflow-compatible basic auth (`--app-name basic-auth`): users, per-experiment and
//! per-registered-model permissions (READ < EDIT < MANAGE, NO_PERMISSIONS, a default for resources
//! without a row), and the users/permissions endpoints of MLflow's basic-auth app.
//!
//! One middleware ([`middleware`]) sits in front of every route: it authenticates (HTTP basic,
//! Argon2id hashes, a short-lived cache of verified credentials), then authorises by the route table
//! in [`permissions`] (fail closed: a route without an entry is refused to non-admins). Only
//! `/health`, `/version` and `/metrics` are public. Users and permissions live in their own database
//! ([`store`]), configured like MLflow's ([`config`]).

pub mod api;
pub mod config;
pub mod lockout;
pub mod middleware;
pub mod permissions;
pub mod store;
pub mod werkzeug;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::Router;

pub use config::AuthConfig;
pub use permissions::Permission;
use store::{AuthStore, AuthStoreError, Resource, UserRecord};

use crate::store::{Store, StoreError};

/// Why basic auth could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("auth store error")]
    Store(#[from] AuthStoreError),
    #[error("tracking store error while resolving a resource")]
    Tracking(#[source] StoreError),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("a password hashing task failed")]
    Join(#[from] tokio::task::JoinError),
}

impl AuthError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Store(e) => e.reason(),
            Self::Tracking(e) => e.reason(),
            Self::Hash(_) => "hash",
            Self::Join(_) => "join",
        }
    }
}

/// The signed-in user of a request (put in the request extensions by the middleware).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentUser {
    pub id: i64,
    pub username: String,
    pub is_admin: bool,
}

impl From<&UserRecord> for CurrentUser {
    fn from(user: &UserRecord) -> Self {
        Self {
            id: user.id,
            username: user.username.clone(),
            is_admin: user.is_admin,
        }
    }
}

/// Basic auth's shared state: the users database, the tracking store (to find a run's or logged
/// model's experiment), the default permission and the caches.
pub struct Auth {
    store: AuthStore,
    tracking: Arc<dyn Store>,
    default_permission: Permission,
    credentials: CredentialCache,
    owners: OwnerCache,
    /// A hash verified against when the user does not exist, so that a wrong username costs what a
    /// wrong password costs (no user enumeration by timing).
    decoy_hash: String,
    /// Failed logins per username and client address (429 past the limit).
    failed_logins: lockout::FailedLogins,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("engine", &self.store.engine())
            .field("default_permission", &self.default_permission)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Open the users database (migrating it) and make sure the configured admin exists and is an
    /// admin; with the password from `MLKUBE_ADMIN_PASSWORD`, also that it has that password.
    pub async fn open(config: &AuthConfig, tracking: Arc<dyn Store>) -> Result<Self, AuthError> {
        let store = AuthStore::open(&config.database_uri).await?;
        let decoy_hash = hash_password(uuid::Uuid::new_v4().to_string()).await?;
        let auth = Self {
            store,
            tracking,
            default_permission: config.default_permission,
            credentials: CredentialCache::new(config.credential_cache_ttl),
            failed_logins: lockout::FailedLogins::new(config.login_limits),
            owners: OwnerCache::default(),
            decoy_hash,
        };
        auth.ensure_admin(config).await?;
        Ok(auth)
    }

    async fn ensure_admin(&self, config: &AuthConfig) -> Result<(), AuthError> {
        let username = &config.admin_username;
        let password = config.admin_password.expose();
        match self.store.get_user(username).await? {
            None => {
                let hash = hash_password(password.to_owned()).await?;
                match self.store.create_user(username, &hash, true).await {
                    Ok(_) => tracing::info!(username = %username, "created the admin user"),
                    // Another replica created it at the same moment.
                    Err(AuthStoreError::AlreadyExists(_)) => {}
                    Err(err) => return Err(err.into()),
                }
            }
            Some(user) => {
                if !user.is_admin {
                    self.store.set_admin(username, true).await?;
                    tracing::warn!(username = %username, "the configured admin user was not an admin; made it one");
                }
                if config.admin_password_from_env
                    && !verify_password(user.password_hash.clone(), password.to_owned()).await?
                {
                    let hash = hash_password(password.to_owned()).await?;
                    self.store.set_password_hash(username, &hash).await?;
                    tracing::info!(
                        username = %username,
                        "admin password updated from {}", config::ADMIN_PASSWORD_ENV
                    );
                }
            }
        }
        Ok(())
    }

    pub fn default_permission(&self) -> Permission {
        self.default_permission
    }

    /// How many users exist (for the `mlflow_user_count` statistic).
    pub async fn user_count(&self) -> Result<i64, AuthError> {
        Ok(self.store.user_count().await?)
    }

    pub fn store(&self) -> &AuthStore {
        &self.store
    }

    pub fn tracking(&self) -> &Arc<dyn Store> {
        &self.tracking
    }

    /// Check a username and password. A pair verified within the cache TTL skips Argon2; the user
    /// row is read every time, so deleted users and admin changes take effect at once.
    pub async fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<CurrentUser>, AuthError> {
        let user = self.store.get_user(username).await?;
        let Some(user) = user else {
            // Same work as a wrong password.
            let _ = verify_password(self.decoy_hash.clone(), password.to_owned()).await?;
            return Ok(None);
        };
        if self.credentials.contains(username, password) {
            return Ok(Some(CurrentUser::from(&user)));
        }
        if verify_password(user.password_hash.clone(), password.to_owned()).await? {
            if werkzeug::is_werkzeug(&user.password_hash) {
                // Imported from MLflow: keep the password, move it to our hash.
                let rehashed = hash_password(password.to_owned()).await?;
                self.store.set_password_hash(username, &rehashed).await?;
                tracing::info!(username = ?username, "basic auth: re-hashed an imported MLflow password");
            }
            self.credentials.insert(username, password);
            Ok(Some(CurrentUser::from(&user)))
        } else {
            Ok(None)
        }
    }

    /// Failed-login accounting (see [`lockout`]).
    pub fn failed_logins(&self) -> &lockout::FailedLogins {
        &self.failed_logins
    }

    /// Forget cached credentials of a user whose password changed or who was deleted.
    pub fn forget_credentials(&self, username: &str) {
        self.credentials.forget(username);
    }

    /// The user's permission on an experiment (the default when there is no row).
    pub async fn experiment_permission(
        &self,
        user: &CurrentUser,
        experiment_id: &str,
    ) -> Result<Permission, AuthError> {
        Ok(self
            .store
            .get_permission(Resource::Experiment, experiment_id, user.id)
            .await?
            .unwrap_or(self.default_permission))
    }

    /// The user's permission on a registered model (the default when there is no row).
    pub async fn registered_model_permission(
        &self,
        user: &CurrentUser,
        name: &str,
    ) -> Result<Permission, AuthError> {
        Ok(self
            .store
            .get_permission(Resource::RegisteredModel, name, user.id)
            .await?
            .unwrap_or(self.default_permission))
    }

    /// Everything the user may read, for filtering search results.
    pub async fn readable(&self, user: &CurrentUser, resource: Resource) -> Result<Readable, AuthError> {
        let rows = self.store.list_permissions(resource, user.id).await?;
        Ok(Readable {
            rows: rows.into_iter().map(|r| (r.resource, r.permission)).collect(),
            default: self.default_permission,
        })
    }

    /// The experiment a run belongs to; `None` when there is no such run. Runs never move, so the
    /// answer is cached.
    pub async fn run_experiment(&self, run_id: &str) -> Result<Option<String>, AuthError> {
        if let Some(hit) = self.owners.get(OwnerKind::Run, run_id) {
            return Ok(Some(hit));
        }
        match self.tracking.get_run(run_id).await {
            Ok(run) => {
                self.owners
                    .insert(OwnerKind::Run, run_id, &run.info.experiment_id);
                Ok(Some(run.info.experiment_id))
            }
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(err) => Err(AuthError::Tracking(err)),
        }
    }

    /// The experiment a logged model belongs to; `None` when there is no such model.
    pub async fn logged_model_experiment(&self, model_id: &str) -> Result<Option<String>, AuthError> {
        if let Some(hit) = self.owners.get(OwnerKind::LoggedModel, model_id) {
            return Ok(Some(hit));
        }
        match self.tracking.get_logged_model(model_id).await {
            Ok(model) => {
                self.owners
                    .insert(OwnerKind::LoggedModel, model_id, &model.info.experiment_id);
                Ok(Some(model.info.experiment_id))
            }
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(err) => Err(AuthError::Tracking(err)),
        }
    }
}

/// A user's readable set: their rows, and the default for everything else.
#[derive(Debug, Clone)]
pub struct Readable {
    rows: HashMap<String, Permission>,
    default: Permission,
}

impl Readable {
    pub fn can_read(&self, key: &str) -> bool {
        self.rows
            .get(key)
            .copied()
            .unwrap_or(self.default)
            .allows(permissions::Need::Read)
    }
}

/// Mount the users/permissions endpoints and put the auth middleware in front of every route of
/// `router` (a no-op when basic auth is off).
pub fn protect<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    auth: Option<Arc<Auth>>,
    max_body_bytes: usize,
) -> Router<S> {
    match auth {
        None => router,
        Some(auth) => router
            .merge(api::router(auth.clone()))
            .layer(axum::middleware::from_fn_with_state(
                middleware::Guard { auth, max_body_bytes },
                middleware::guard,
            )),
    }
}

// === passwords ===

/// Argon2id with OWASP's baseline parameters (19 MiB, 2 passes, 1 lane).
fn argon2() -> Result<Argon2<'static>, AuthError> {
    let params = Params::new(19 * 1024, 2, 1, None).map_err(|e| AuthError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// At most this many Argon2 computations run at once (each holds 19 MiB for tens of milliseconds),
/// so a flood of wrong passwords queues instead of exhausting memory and the blocking pool.
/// Requests whose credentials are cached never wait here.
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Run Argon2 work on the blocking pool under a [`HASHING`] permit.
async fn hashing<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, AuthError> {
    let _permit = HASHING
        .acquire()
        .await
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    Ok(tokio::task::spawn_blocking(work).await?)
}

/// Hash a password into a PHC string (off the async threads: it takes tens of milliseconds).
pub async fn hash_password(password: String) -> Result<String, AuthError> {
    hashing(move || {
        let salt_bytes: [u8; 16] = rand::random();
        let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| AuthError::Hash(e.to_string()))?;
        argon2()?
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| AuthError::Hash(e.to_string()))
    })
    .await?
}

/// Verify a password against a PHC string, or MLflow's werkzeug hash of an imported user
/// (constant-time comparison of the derived hash). A hash that does not parse verifies nothing.
pub async fn verify_password(hash: String, password: String) -> Result<bool, AuthError> {
    hashing(move || {
        if werkzeug::is_werkzeug(&hash) {
            return werkzeug::verify(&hash, &password).unwrap_or(false);
        }
        let Ok(parsed) = PasswordHash::new(&hash) else {
            return false;
        };
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
    .await
}

// === caches ===

/// The most entries either cache holds; a full cache is emptied (cheap, and refills on demand).
const CACHE_CAPACITY: usize = 10_000;

/// Verified username/password pairs for a short TTL, keyed by a 128-bit keyed hash (two SipHash
/// keys drawn at startup) of the pair: passwords are never stored, and a key cannot be forged
/// without the process's secret hash keys. The entry also records the username it was made for.
struct CredentialCache {
    ttl: Duration,
    keys: (RandomState, RandomState),
    entries: Mutex<HashMap<(u64, u64), (String, Instant)>>,
}

impl CredentialCache {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            keys: (RandomState::new(), RandomState::new()),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, username: &str, password: &str) -> (u64, u64) {
        let pair = (username, password);
        (self.keys.0.hash_one(pair), self.keys.1.hash_one(pair))
    }

    fn contains(&self, username: &str, password: &str) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let key = self.key(username, password);
        let Ok(entries) = self.entries.lock() else {
            return false;
        };
        entries
            .get(&key)
            .is_some_and(|(user, verified)| user == username && verified.elapsed() < self.ttl)
    }

    fn insert(&self, username: &str, password: &str) {
        if self.ttl.is_zero() {
            return;
        }
        let key = self.key(username, password);
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CACHE_CAPACITY {
                let ttl = self.ttl;
                entries.retain(|_, (_, verified)| verified.elapsed() < ttl);
                if entries.len() >= CACHE_CAPACITY {
                    entries.clear();
                }
            }
            entries.insert(key, (username.to_owned(), Instant::now()));
        }
    }

    fn forget(&self, username: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, (user, _)| user != username);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum OwnerKind {
    Run,
    LoggedModel,
}

/// Run / logged model → experiment. Neither ever changes experiment, and ids are never reused, so
/// entries need no expiry.
#[derive(Default)]
struct OwnerCache {
    entries: Mutex<HashMap<(OwnerKind, String), String>>,
}

impl OwnerCache {
    fn get(&self, kind: OwnerKind, id: &str) -> Option<String> {
        self.entries.lock().ok()?.get(&(kind, id.to_owned())).cloned()
    }

    fn insert(&self, kind: OwnerKind, id: &str, experiment_id: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CACHE_CAPACITY * 10 {
                entries.clear();
            }
            entries.insert((kind, id.to_owned()), experiment_id.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn argon2id_hashes_verify() {
        let hash = hash_password("correct horse battery".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(
            verify_password(hash.clone(), "correct horse battery".into())
                .await
                .unwrap()
        );
        assert!(
            !verify_password(hash.clone(), "correct horse batterY".into())
                .await
                .unwrap()
        );
        assert!(
            !verify_password("not a phc string".into(), "x".into())
                .await
                .unwrap()
        );
        let again = hash_password("correct horse battery".into()).await.unwrap();
        assert_ne!(hash, again, "salts must differ");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_verifications_queue_and_all_answer() {
        let hash = hash_password("right-password".into()).await.unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let hash = hash.clone();
                let password = if i % 2 == 0 {
                    "right-password"
                } else {
                    "wrong-password"
                };
                tokio::spawn(
                    async move { verify_password(hash, password.into()).await.unwrap() == (i % 2 == 0) },
                )
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap());
        }
    }

    #[test]
    fn credential_cache_expires_and_forgets() {
        let cache = CredentialCache::new(Duration::from_secs(60));
        assert!(!cache.contains("a", "pw"));
        cache.insert("a", "pw");
        assert!(cache.contains("a", "pw"));
        assert!(!cache.contains("a", "pw2"));
        assert!(!cache.contains("b", "pw"));
        // ("a:b", "c") and ("a", "b:c") must not collide.
        cache.insert("a:b", "c");
        assert!(!cache.contains("a", "b:c"));
        cache.forget("a");
        assert!(!cache.contains("a", "pw"));
        assert!(cache.contains("a:b", "c"));

        let off = CredentialCache::new(Duration::ZERO);
        off.insert("a", "pw");
        assert!(!off.contains("a", "pw"));
        let short = CredentialCache::new(Duration::from_millis(1));
        short.insert("a", "pw");
        std::thread::sleep(Duration::from_millis(5));
        assert!(!short.contains("a", "pw"));
    }
}
