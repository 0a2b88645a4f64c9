//! The key ring: key id → 256-bit AES key, one of them active, read from the environment or
//! from a file mounted by an orchestrator.
//!
//! Configuration (the same entry syntax in both places):
//!
//! - `CHAT_ENCRYPTION_KEYS=2026-11:<base64 key>,2026-05:<base64 key>`, or
//! - `CHAT_ENCRYPTION_KEYS_FILE=/run/secrets/chat-keys`, a file of entries, one per line or
//!   comma separated, with blank lines and `#` comments (to the end of the line) allowed;
//! - `CHAT_ENCRYPTION_ACTIVE_KEY=2026-11`: the key that seals new values. It may be left
//!   unset only when exactly one key is configured, which is then active. With several keys
//!   it is required: guessing which one is new would silently pick the wrong one.
//!
//! Setting both `CHAT_ENCRYPTION_KEYS` and `CHAT_ENCRYPTION_KEYS_FILE` is an error. A variable
//! set to an empty (or all-blank) value counts as unset, because that is how deployment
//! templates usually "unset" one. Keys are 32 bytes in base64, standard (`+/`) or URL-safe
//! (`-_`) alphabet, padding optional (`openssl rand -base64 32` makes one).
//!
//! Errors name the key id or the position of the entry, never the key: an entry whose id is
//! refused is reported by position only, since the "id" may be a key typed in the wrong place.
//! `Debug` of the ring prints key ids only. Decoded key bytes and the configuration text are
//! wiped from memory when dropped; the ciphers wipe their round keys on drop (`aes-gcm`'s
//! `zeroize` feature).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use aes_gcm::{Aes256Gcm, KeyInit};
use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use zeroize::Zeroizing;

use crate::key_id::{KeyId, KeyIdError};

/// The environment variable holding the keys inline: `id:base64key,id:base64key`.
pub const KEYS_VAR: &str = "CHAT_ENCRYPTION_KEYS";
/// The environment variable naming the key that seals new values.
pub const ACTIVE_KEY_VAR: &str = "CHAT_ENCRYPTION_ACTIVE_KEY";
/// The environment variable naming a file of keys (same entries, one per line or comma
/// separated, `#` comments).
pub const KEYS_FILE_VAR: &str = "CHAT_ENCRYPTION_KEYS_FILE";
/// The length of a key: AES-256.
pub const KEY_BYTES: usize = 32;

/// Keys by id, one of them active. Cheap to share behind an `Arc`; `Clone` copies the
/// expanded ciphers.
#[derive(Clone)]
pub struct KeyRing {
    keys: BTreeMap<KeyId, Aes256Gcm>,
    active: KeyId,
}

/// Why a key ring could not be built. Every message names a key id or an entry's position,
/// never key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    /// Both the inline keys and the key file are configured.
    #[error("both {KEYS_VAR} and {KEYS_FILE_VAR} are set; set only one of them")]
    BothSources,
    /// The key file could not be read.
    #[error("cannot read the key file {path} named by {KEYS_FILE_VAR}")]
    KeysFileUnreadable {
        /// The path given in `CHAT_ENCRYPTION_KEYS_FILE`.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A configured source holds no entry (only blank lines or comments).
    #[error("{source_name} holds no keys")]
    NoKeys {
        /// `CHAT_ENCRYPTION_KEYS` or the key file's path.
        source_name: String,
    },
    /// An entry has no `:` between id and key.
    #[error("{location}: expected `key-id:base64-key`, found no ':'")]
    MalformedEntry {
        /// Where the entry is, e.g. `entry 2 on line 1 of CHAT_ENCRYPTION_KEYS`.
        location: String,
    },
    /// An entry's id is not a valid [`KeyId`]; the id is not echoed.
    #[error("{location}: invalid key id: {reason}")]
    InvalidKeyId {
        /// Where the entry is.
        location: String,
        /// What is wrong with the id.
        reason: KeyIdError,
    },
    /// A key is not base64.
    #[error("key {id}: the key is not valid base64")]
    BadBase64 {
        /// The key's id.
        id: KeyId,
    },
    /// A key does not decode to 32 bytes.
    #[error("key {id}: the key is {length} bytes, expected {KEY_BYTES} (a 256-bit key in base64)")]
    WrongKeyLength {
        /// The key's id.
        id: KeyId,
        /// The decoded length.
        length: usize,
    },
    /// Two entries share an id.
    #[error("key {id} is configured twice")]
    DuplicateKeyId {
        /// The repeated id.
        id: KeyId,
    },
    /// The active id names no configured key.
    #[error("{ACTIVE_KEY_VAR} names key {id}, which is not in the key ring")]
    ActiveKeyMissing {
        /// The active id.
        id: KeyId,
    },
    /// An active id is set but no keys are.
    #[error(
        "{ACTIVE_KEY_VAR} names key {id}, but no keys are configured (set {KEYS_VAR} or {KEYS_FILE_VAR})"
    )]
    ActiveKeyWithoutKeys {
        /// The active id.
        id: KeyId,
    },
    /// The active id is not a valid [`KeyId`]; it is not echoed.
    #[error("{ACTIVE_KEY_VAR} is not a valid key id: {reason}")]
    InvalidActiveKeyId {
        /// What is wrong with it.
        reason: KeyIdError,
    },
    /// Several keys are configured and none is named active.
    #[error(
        "keys {ids} are configured but {ACTIVE_KEY_VAR} is not set; name the key that encrypts new messages"
    )]
    ActiveKeyNotSet {
        /// The configured ids, comma separated.
        ids: String,
    },
}

impl KeyRing {
    /// Builds a ring from decoded keys (for tests and tools; services configure it with
    /// [`KeyRing::from_env_lookup`]).
    ///
    /// # Errors
    /// [`KeyRingError::DuplicateKeyId`] when an id repeats, [`KeyRingError::ActiveKeyMissing`]
    /// when `active` names none of the keys.
    pub fn from_keys(
        keys: impl IntoIterator<Item = (KeyId, [u8; KEY_BYTES])>,
        active: KeyId,
    ) -> Result<Self, KeyRingError> {
        let mut ring = BTreeMap::new();
        for (id, bytes) in keys {
            let bytes = Zeroizing::new(bytes);
            insert_key(&mut ring, id, bytes.as_slice())?;
        }
        Self::with_active(ring, Some(active))
    }

    /// Builds a ring from entry text (the syntax of `CHAT_ENCRYPTION_KEYS` and of the key
    /// file: `id:base64key` entries separated by commas or new lines, `#` comments) and the
    /// active id (may be `None` only when there is exactly one key).
    ///
    /// # Errors
    /// A [`KeyRingError`] for a malformed entry, an invalid id, bad base64, a key that is not
    /// 32 bytes, a duplicate id, no entries, or an active id that is missing, invalid or not
    /// in the ring.
    pub fn parse(entries: &str, active: Option<&str>) -> Result<Self, KeyRingError> {
        let active = parse_active(active)?;
        let keys = parse_entries(entries, KEYS_VAR)?;
        Self::with_active(keys, active)
    }

    /// Reads the configuration through `lookup` (environment variable name → value), so
    /// tests need not touch the process environment. Returns `Ok(None)` when none of
    /// `CHAT_ENCRYPTION_KEYS`, `CHAT_ENCRYPTION_KEYS_FILE` and `CHAT_ENCRYPTION_ACTIVE_KEY`
    /// is set (blank counts as unset): the service then stores plain text, as before.
    ///
    /// # Errors
    /// A [`KeyRingError`] when both key sources are set, the key file cannot be read, or the
    /// configuration is invalid (see [`KeyRing::parse`]); an active id set without keys is
    /// [`KeyRingError::ActiveKeyWithoutKeys`].
    pub fn from_env_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, KeyRingError> {
        let read = |name: &str| {
            lookup(name)
                .map(Zeroizing::new)
                .filter(|value| !value.trim().is_empty())
        };
        let inline = read(KEYS_VAR);
        let file = read(KEYS_FILE_VAR);
        let active_text = read(ACTIVE_KEY_VAR);
        let active = parse_active(active_text.as_deref().map(String::as_str))?;
        let keys = match (inline, file) {
            (Some(_), Some(_)) => return Err(KeyRingError::BothSources),
            (Some(inline), None) => parse_entries(&inline, KEYS_VAR)?,
            (None, Some(path)) => {
                let path = PathBuf::from(path.trim());
                let text =
                    std::fs::read_to_string(&path)
                        .map(Zeroizing::new)
                        .map_err(|source| KeyRingError::KeysFileUnreadable {
                            path: path.clone(),
                            source,
                        })?;
                parse_entries(&text, &path.display().to_string())?
            }
            (None, None) => {
                return match active {
                    Some(id) => Err(KeyRingError::ActiveKeyWithoutKeys { id }),
                    None => Ok(None),
                };
            }
        };
        Self::with_active(keys, active).map(Some)
    }

    /// [`KeyRing::from_env_lookup`] over the process environment (a value that is not
    /// UTF-8 is read lossily, and then fails to parse with a message naming the key id).
    ///
    /// # Errors
    /// As [`KeyRing::from_env_lookup`].
    pub fn from_env() -> Result<Option<Self>, KeyRingError> {
        Self::from_env_lookup(|name| {
            std::env::var_os(name).map(|value| value.to_string_lossy().into_owned())
        })
    }

    /// The key that seals new values; its id goes to `MESSAGES.encryption_key_id`.
    pub fn active_key_id(&self) -> &KeyId {
        &self.active
    }

    /// Whether the ring holds a key with this id (as read from `encryption_key_id`).
    pub fn contains(&self, key_id: &str) -> bool {
        self.cipher(key_id).is_some()
    }

    /// Whether `key_id` (as read from `encryption_key_id`) is the active key: a row under
    /// any other key, or under none, is one for `chatd reencrypt` to move.
    pub fn is_active(&self, key_id: &str) -> bool {
        self.active.as_str() == key_id
    }

    /// Every key id in the ring, in ascending order.
    pub fn key_ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.keys()
    }

    /// The cipher of a key, by the id a row names.
    pub(crate) fn cipher(&self, key_id: &str) -> Option<(&KeyId, &Aes256Gcm)> {
        self.keys.get_key_value(key_id)
    }

    /// The active key's id and cipher.
    pub(crate) fn active_cipher(&self) -> Option<(&KeyId, &Aes256Gcm)> {
        self.keys.get_key_value(&self.active)
    }

    fn with_active(
        keys: BTreeMap<KeyId, Aes256Gcm>,
        active: Option<KeyId>,
    ) -> Result<Self, KeyRingError> {
        let active = match active {
            Some(id) if keys.contains_key(&id) => id,
            Some(id) if keys.is_empty() => return Err(KeyRingError::ActiveKeyWithoutKeys { id }),
            Some(id) => return Err(KeyRingError::ActiveKeyMissing { id }),
            None => {
                let mut ids = keys.keys();
                match (ids.next(), ids.next()) {
                    (Some(only), None) => only.clone(),
                    _ => {
                        return Err(KeyRingError::ActiveKeyNotSet {
                            ids: keys
                                .keys()
                                .map(KeyId::as_str)
                                .collect::<Vec<_>>()
                                .join(", "),
                        });
                    }
                }
            }
        };
        Ok(Self { keys, active })
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Ids only: the ciphers' own Debug is opaque today, but this must not depend on it.
        f.debug_struct("KeyRing")
            .field("active", &self.active)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn parse_active(active: Option<&str>) -> Result<Option<KeyId>, KeyRingError> {
    active
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(|text| {
            KeyId::parse(text).map_err(|reason| KeyRingError::InvalidActiveKeyId { reason })
        })
        .transpose()
}

/// Parses `id:key` entries separated by commas and new lines; `#` starts a comment (base64
/// never contains `#`, so a comment cannot cut a key).
fn parse_entries(
    text: &str,
    source_name: &str,
) -> Result<BTreeMap<KeyId, Aes256Gcm>, KeyRingError> {
    let mut keys = BTreeMap::new();
    for (line_index, line) in text.lines().enumerate() {
        let line = line.split_once('#').map_or(line, |(before, _)| before);
        let entries = line.split(',').map(str::trim).filter(|e| !e.is_empty());
        for (entry_index, entry) in entries.enumerate() {
            let location = || {
                format!(
                    "entry {} on line {} of {source_name}",
                    entry_index + 1,
                    line_index + 1
                )
            };
            let (id, key) = entry
                .split_once(':')
                .ok_or_else(|| KeyRingError::MalformedEntry {
                    location: location(),
                })?;
            let id = KeyId::parse(id.trim()).map_err(|reason| KeyRingError::InvalidKeyId {
                location: location(),
                reason,
            })?;
            let bytes =
                decode_key(key.trim()).ok_or_else(|| KeyRingError::BadBase64 { id: id.clone() })?;
            insert_key(&mut keys, id, &bytes)?;
        }
    }
    if keys.is_empty() {
        return Err(KeyRingError::NoKeys {
            source_name: source_name.to_owned(),
        });
    }
    Ok(keys)
}

/// Decodes a key in either base64 alphabet, padding optional.
fn decode_key(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    [alphabet::STANDARD, alphabet::URL_SAFE]
        .iter()
        .find_map(|alphabet| GeneralPurpose::new(alphabet, config).decode(text).ok())
        .map(Zeroizing::new)
}

fn insert_key(
    keys: &mut BTreeMap<KeyId, Aes256Gcm>,
    id: KeyId,
    bytes: &[u8],
) -> Result<(), KeyRingError> {
    if bytes.len() != KEY_BYTES {
        return Err(KeyRingError::WrongKeyLength {
            id,
            length: bytes.len(),
        });
    }
    if keys.contains_key(&id) {
        return Err(KeyRingError::DuplicateKeyId { id });
    }
    let cipher = Aes256Gcm::new_from_slice(bytes).map_err(|_| KeyRingError::WrongKeyLength {
        id: id.clone(),
        length: bytes.len(),
    })?;
    keys.insert(id, cipher);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    const KEY_A: [u8; 32] = [0xA1; 32];
    const KEY_B: [u8; 32] = [0xFB; 32];

    fn b64(key: &[u8]) -> String {
        STANDARD.encode(key)
    }

    fn env<'a>(vars: &'a [(&'a str, String)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(var, _)| *var == name)
                .map(|(_, value)| value.clone())
        }
    }

    fn ids(ring: &KeyRing) -> Vec<&str> {
        ring.key_ids().map(KeyId::as_str).collect()
    }

    /// Writes a key file unique to this test process and test name.
    fn key_file(name: &str, text: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("chat-crypto-{}-{name}.keys", std::process::id()));
        std::fs::write(&path, text).expect("write key file");
        path
    }

    #[test]
    fn nothing_configured_means_no_ring() {
        assert!(KeyRing::from_env_lookup(env(&[])).unwrap().is_none());
        let blank = [
            (KEYS_VAR, "  ".to_owned()),
            (KEYS_FILE_VAR, String::new()),
            (ACTIVE_KEY_VAR, String::new()),
        ];
        assert!(KeyRing::from_env_lookup(env(&blank)).unwrap().is_none());
    }

    #[test]
    fn env_keys_with_active_id() {
        let vars = [
            (
                KEYS_VAR,
                format!("2026-11:{}, 2026-05:{}", b64(&KEY_B), b64(&KEY_A)),
            ),
            (ACTIVE_KEY_VAR, "2026-11".to_owned()),
        ];
        let ring = KeyRing::from_env_lookup(env(&vars)).unwrap().unwrap();
        assert_eq!(ring.active_key_id().as_str(), "2026-11");
        assert_eq!(ids(&ring), ["2026-05", "2026-11"]);
        assert!(ring.contains("2026-05"));
        assert!(ring.is_active("2026-11") && !ring.is_active("2026-05"));
        assert!(!ring.contains("2025-01"));
        assert!(!ring.contains("not an id"));
    }

    #[test]
    fn a_ring_can_be_shared_across_threads() {
        fn shareable<T: Send + Sync + Clone + 'static>() {}
        shareable::<KeyRing>();
    }

    #[test]
    fn a_single_key_is_active_by_default() {
        let vars = [(KEYS_VAR, format!("only:{}", b64(&KEY_A)))];
        let ring = KeyRing::from_env_lookup(env(&vars)).unwrap().unwrap();
        assert_eq!(ring.active_key_id().as_str(), "only");
    }

    #[test]
    fn keys_in_either_base64_alphabet_with_or_without_padding() {
        // 0xFB bytes encode with '+' and '/' in the standard alphabet, '-' and '_' URL-safe.
        let standard = b64(&KEY_B);
        assert!(standard.contains('/') && standard.ends_with('='));
        for key in [
            standard.clone(),
            standard.trim_end_matches('=').to_owned(),
            URL_SAFE_NO_PAD.encode(KEY_B),
        ] {
            let ring = KeyRing::parse(&format!("k:{key}"), None).unwrap();
            assert_eq!(ids(&ring), ["k"]);
        }
    }

    #[test]
    fn key_file_with_lines_commas_and_comments() {
        let text = format!(
            "# keys for chatd\n\n2026-11:{}   # current\n2026-05:{},2025-11:{}\n",
            b64(&KEY_B),
            b64(&KEY_A),
            b64(&[7; 32])
        );
        let path = key_file("good", &text);
        let vars = [
            (KEYS_FILE_VAR, path.display().to_string()),
            (ACTIVE_KEY_VAR, "2026-11".to_owned()),
        ];
        let ring = KeyRing::from_env_lookup(env(&vars)).unwrap().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(ids(&ring), ["2025-11", "2026-05", "2026-11"]);
        assert_eq!(ring.active_key_id().as_str(), "2026-11");
    }

    #[test]
    fn unreadable_key_file_names_the_path() {
        let vars = [(KEYS_FILE_VAR, "/nonexistent/chat-keys".to_owned())];
        let err = KeyRing::from_env_lookup(env(&vars)).unwrap_err();
        assert!(
            matches!(err, KeyRingError::KeysFileUnreadable { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("/nonexistent/chat-keys"));
    }

    #[test]
    fn key_file_of_comments_only_holds_no_keys() {
        let path = key_file("empty", "# nothing yet\n\n");
        let vars = [(KEYS_FILE_VAR, path.display().to_string())];
        let err = KeyRing::from_env_lookup(env(&vars)).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(err, KeyRingError::NoKeys { .. }), "{err:?}");
    }

    /// One configuration error: its variant, words its message must hold, and the key
    /// material that must appear in neither its `Display` nor its `Debug`.
    fn check(
        vars: &[(&str, String)],
        matches: fn(&KeyRingError) -> bool,
        says: &[&str],
        secrets: &[&str],
    ) {
        let err = KeyRing::from_env_lookup(env(vars)).unwrap_err();
        assert!(matches(&err), "unexpected error {err:?}");
        let shown = err.to_string();
        for word in says {
            assert!(shown.contains(word), "{shown:?} should name {word:?}");
        }
        let debug = format!("{err:?}");
        for secret in secrets {
            assert!(
                !shown.contains(secret) && !debug.contains(secret),
                "{shown:?} / {debug:?} leaks a key"
            );
        }
    }

    #[test]
    fn configuration_errors_name_the_key_id_and_never_the_key() {
        let a = b64(&KEY_A);
        let b = b64(&KEY_B);
        let short = b64(&[9; 16]);
        let not_base64 = "not*base64*at*all*but*secret".to_owned();
        let a_bare = a.trim_end_matches('=').to_owned();
        let b_bare = b.trim_end_matches('=').to_owned();
        let secrets = [
            a_bare.as_str(),
            b_bare.as_str(),
            short.trim_end_matches('='),
            &not_base64,
        ];
        let active = |id: &str| (ACTIVE_KEY_VAR, id.to_owned());
        let keys = |text: String| (KEYS_VAR, text);

        check(
            &[keys(format!("2026-11:{short}"))],
            |e| matches!(e, KeyRingError::WrongKeyLength { length: 16, .. }),
            &["2026-11", "16 bytes"],
            &secrets,
        );
        check(
            &[keys(format!("2026-11:{not_base64}"))],
            |e| matches!(e, KeyRingError::BadBase64 { .. }),
            &["2026-11", "base64"],
            &secrets,
        );
        check(
            &[keys(format!("2026-11:{a},2026-11:{b}")), active("2026-11")],
            |e| matches!(e, KeyRingError::DuplicateKeyId { .. }),
            &["2026-11", "twice"],
            &secrets,
        );
        check(
            &[keys(format!("2026-11:{a}")), active("2027-01")],
            |e| matches!(e, KeyRingError::ActiveKeyMissing { .. }),
            &["2027-01", ACTIVE_KEY_VAR],
            &secrets,
        );
        check(
            &[active("2026-11")],
            |e| matches!(e, KeyRingError::ActiveKeyWithoutKeys { .. }),
            &["2026-11", KEYS_VAR],
            &secrets,
        );
        check(
            &[keys(format!("2026-11:{a},2026-05:{b}"))],
            |e| matches!(e, KeyRingError::ActiveKeyNotSet { .. }),
            &["2026-05, 2026-11", ACTIVE_KEY_VAR],
            &secrets,
        );
        check(
            &[
                keys(format!("2026-11:{a}")),
                (KEYS_FILE_VAR, "/run/secrets/keys".to_owned()),
            ],
            |e| matches!(e, KeyRingError::BothSources),
            &[KEYS_VAR, KEYS_FILE_VAR],
            &secrets,
        );
        // A key with no id, and a key pasted in the id's place: reported by position, not echoed.
        check(
            &[keys(format!("2026-11:{a},{b}"))],
            |e| matches!(e, KeyRingError::MalformedEntry { .. }),
            &["entry 2 on line 1", KEYS_VAR],
            &secrets,
        );
        check(
            &[keys(format!("{b}:2026-11"))],
            |e| {
                matches!(
                    e,
                    KeyRingError::InvalidKeyId {
                        reason: KeyIdError::BadCharacter,
                        ..
                    }
                )
            },
            &["entry 1 on line 1"],
            &secrets,
        );
        check(
            &[keys(format!("2026-11:{a}")), active(&b)],
            |e| matches!(e, KeyRingError::InvalidActiveKeyId { .. }),
            &[ACTIVE_KEY_VAR],
            &secrets,
        );
    }

    #[test]
    fn from_keys_checks_duplicates_and_the_active_id() {
        let id = |text: &str| KeyId::parse(text).unwrap();
        let ring = KeyRing::from_keys([(id("new"), KEY_B), (id("old"), KEY_A)], id("new")).unwrap();
        assert_eq!(ring.active_key_id().as_str(), "new");
        let err = KeyRing::from_keys([(id("k"), KEY_A), (id("k"), KEY_B)], id("k")).unwrap_err();
        assert!(matches!(err, KeyRingError::DuplicateKeyId { .. }));
        let err = KeyRing::from_keys([(id("k"), KEY_A)], id("other")).unwrap_err();
        assert!(matches!(err, KeyRingError::ActiveKeyMissing { .. }));
    }

    #[test]
    fn debug_shows_key_ids_and_hides_keys() {
        let text = format!("2026-11:{},2026-05:{}", b64(&KEY_B), b64(&KEY_A));
        let ring = KeyRing::parse(&text, Some("2026-11")).unwrap();
        let debug = format!("{ring:?} {ring:#?}");
        assert!(
            debug.contains("2026-11") && debug.contains("2026-05"),
            "{debug}"
        );
        for key in [KEY_A, KEY_B] {
            for encoded in [b64(&key), URL_SAFE_NO_PAD.encode(key)] {
                assert!(!debug.contains(encoded.trim_end_matches('=')), "{debug}");
            }
            // Neither as a byte list ("161, 161") nor in hex.
            let byte = key[0];
            assert!(!debug.contains(&format!("{byte}, {byte}")), "{debug}");
            assert!(
                !debug
                    .to_lowercase()
                    .contains(&format!("{byte:02x}{byte:02x}")),
                "{debug}"
            );
        }
    }
}
