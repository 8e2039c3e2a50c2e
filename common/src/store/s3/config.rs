//! Where an S3 store is and who we are to it: the `s3://bucket/prefix`
//! location, endpoint, region, addressing style, credentials and the
//! tuning knobs, read from the environment and the aws CLI's files the way
//! the aws CLI reads them.

use super::credentials::Provider;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// S3's smallest part (all parts but the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// The default part size (`DBSAFE_S3_PART_SIZE`).
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;

/// `s3://bucket/prefix`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The bucket.
    pub bucket: String,
    /// The key prefix of the store, without leading or trailing `/` (may be empty).
    pub prefix: String,
}

impl Location {
    /// Parses `s3://bucket[/prefix]`.
    pub fn parse(url: &str) -> Result<Location> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| Error::usage(format!("{url:?} is not an s3://bucket/prefix URL")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !bucket_ok {
            return Err(Error::usage(format!(
                "{url}: invalid bucket name {bucket:?} (3 to 63 lower-case letters, digits, '-' and '.')"
            )));
        }
        let prefix = prefix.trim_matches('/');
        if prefix
            .split('/')
            .any(|c| c == "." || c == ".." || (c.is_empty() && !prefix.is_empty()))
        {
            return Err(Error::usage(format!(
                "{url}: invalid prefix {prefix:?} (empty, '.' or '..' components)"
            )));
        }
        Ok(Location {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// The full object key of a store key.
    pub fn object_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// The store key of a full object key, when it lies under the store's prefix.
    pub fn store_key<'a>(&self, object_key: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            Some(object_key)
        } else {
            object_key
                .strip_prefix(self.prefix.as_str())
                .and_then(|k| k.strip_prefix('/'))
        }
    }

    /// `s3://bucket/prefix` (no secrets: there are none in a location).
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Credentials, and where they came from (for messages; never the secret).
#[derive(Clone)]
pub struct Credentials {
    /// The access key id: safe to print.
    pub key_id: String,
    /// The secret access key: never printed, logged or written.
    pub secret: String,
    /// The session token of temporary credentials: a secret too.
    pub token: Option<String>,
    /// `AWS_ACCESS_KEY_ID` or `profile NAME in FILE`.
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({} from {})", self.key_id, self.source)
    }
}

/// Where the credentials come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Keys from the environment or a profile.
    Fixed(Credentials),
    /// Temporary keys from a web identity, the container or instance metadata.
    Fetched(Provider),
}

#[cfg(test)]
impl Source {
    fn fixed(&self) -> &Credentials {
        match self {
            Source::Fixed(c) => c,
            Source::Fetched(p) => panic!("fetched from {p:?}"),
        }
    }
}

/// Everything the S3 store needs besides the location.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, or AWS's regional endpoint.
    pub endpoint: String,
    /// `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's region, or us-east-1.
    pub region: String,
    /// Path-style (`endpoint/bucket/key`) rather than virtual-hosted addressing.
    pub path_style: bool,
    /// Who signs the requests.
    pub credentials: Source,
    /// Size of the first 1,000 parts of a multipart upload.
    pub part_size: u64,
    /// Parts uploaded concurrently while the writer fills the next one.
    pub parts_in_flight: usize,
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// Connect, read and write timeout of one request.
    pub timeout: Duration,
}

/// Reads the settings from an environment (`std::env::var` in the tools).
pub fn settings(env: &dyn Fn(&str) -> Option<String>) -> Result<Settings> {
    let var = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let home = var("HOME").map(PathBuf::from);
    let profile_name = var("AWS_PROFILE")
        .or_else(|| var("AWS_DEFAULT_PROFILE"))
        .unwrap_or_else(|| "default".into());
    let explicit_profile = var("AWS_PROFILE").is_some() || var("AWS_DEFAULT_PROFILE").is_some();
    let credentials_file = var("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials")));
    let config_file = var("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".aws/config")));
    let from_credentials_file = credentials_file
        .as_ref()
        .and_then(|p| read_ini(p).map(|ini| (p.clone(), ini)))
        .and_then(|(p, mut ini)| ini.remove(&profile_name).map(|s| (p, s)));
    let from_config_file = config_file
        .as_ref()
        .and_then(|p| read_ini(p).map(|ini| (p.clone(), ini)))
        .and_then(|(p, mut ini)| {
            let section = if profile_name == "default" {
                ini.remove("default")
            } else {
                ini.remove(&format!("profile {profile_name}"))
            };
            section.map(|s| (p, s))
        });

    let region = var("AWS_REGION")
        .or_else(|| var("AWS_DEFAULT_REGION"))
        .or_else(|| {
            from_config_file
                .as_ref()
                .and_then(|(_, s)| s.get("region").cloned())
        })
        .unwrap_or_else(|| "us-east-1".into());
    let credentials = match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        (Some(key_id), Some(secret)) => Source::Fixed(Credentials {
            key_id,
            secret,
            token: var("AWS_SESSION_TOKEN"),
            source: "AWS_ACCESS_KEY_ID".into(),
        }),
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::usage(
                "S3 credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together",
            ))
        }
        (None, None) => {
            let profile = [&from_credentials_file, &from_config_file]
                .into_iter()
                .flatten()
                .find(|(_, s)| s.contains_key("aws_access_key_id"));
            match profile {
                Some((path, s)) => Source::Fixed(Credentials {
                    key_id: s["aws_access_key_id"].clone(),
                    secret: s.get("aws_secret_access_key").cloned().ok_or_else(|| {
                        Error::usage(format!(
                            "profile {profile_name} in {} has aws_access_key_id but no aws_secret_access_key",
                            path.display()
                        ))
                    })?,
                    token: s.get("aws_session_token").cloned(),
                    source: format!("profile {profile_name} in {}", path.display()),
                }),
                None if explicit_profile => {
                    return Err(Error::usage(format!(
                        "AWS profile {profile_name} has no credentials in {}",
                        credentials_file
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|| "~/.aws/credentials".into())
                    ))
                    .hint("add aws_access_key_id and aws_secret_access_key to it (aws configure --profile NAME)"))
                }
                None => match Provider::from_env(&var, &region) {
                    Some(p) => Source::Fetched(p),
                    None => return Err(Error::usage("no S3 credentials").hint(
                        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE with ~/.aws/credentials, or run where instance metadata gives them (AWS_EC2_METADATA_DISABLED is set)",
                    )),
                },
            }
        }
    };

    let endpoint = var("AWS_ENDPOINT_URL_S3")
        .or_else(|| var("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
    let path_style = match var("DBSAFE_S3_PATH_STYLE") {
        Some(v) => parse_bool("DBSAFE_S3_PATH_STYLE", &v)?,
        // A bucket cannot be a subdomain of an IP address or of localhost.
        None => endpoint_is_ip_or_localhost(&endpoint),
    };
    let part_size = match var("DBSAFE_S3_PART_SIZE") {
        Some(v) => crate::units::parse_size(&v)?,
        None => DEFAULT_PART_SIZE,
    };
    if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size) {
        return Err(Error::usage(format!(
            "DBSAFE_S3_PART_SIZE={}: S3 parts are 5M to 5G",
            var("DBSAFE_S3_PART_SIZE").unwrap_or_default()
        )));
    }
    let parts_in_flight = bounded_number(
        var("DBSAFE_S3_PARTS_IN_FLIGHT"),
        "DBSAFE_S3_PARTS_IN_FLIGHT",
        2,
        1..=16,
    )?;
    let attempts = bounded_number(var("DBSAFE_S3_RETRIES"), "DBSAFE_S3_RETRIES", 5, 1..=20)?;
    let timeout = match var("DBSAFE_S3_TIMEOUT") {
        Some(v) => crate::units::parse_duration(&v)?,
        None => Duration::from_secs(60),
    };
    if timeout.is_zero() {
        return Err(Error::usage("DBSAFE_S3_TIMEOUT must be positive"));
    }
    Ok(Settings {
        endpoint,
        region,
        path_style,
        credentials,
        part_size,
        parts_in_flight: parts_in_flight as usize,
        attempts,
        timeout,
    })
}

fn bounded_number(
    value: Option<String>,
    name: &str,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32> {
    let Some(v) = value else {
        return Ok(default);
    };
    v.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            Error::usage(format!(
                "{name}={v}: expected a number from {} to {}",
                range.start(),
                range.end()
            ))
        })
}

fn parse_bool(name: &str, v: &str) -> Result<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::usage(format!(
            "{name}={v}: expected 1/true or 0/false"
        ))),
    }
}

fn endpoint_is_ip_or_localhost(endpoint: &str) -> bool {
    let Ok(url) = url::Url::parse(endpoint) else {
        return false;
    };
    match url.host() {
        Some(url::Host::Ipv4(_)) | Some(url::Host::Ipv6(_)) => true,
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// Sections of an ini file by name, each its keys (lower case) and values.
type Ini = BTreeMap<String, BTreeMap<String, String>>;

/// An aws CLI file, when it exists; one that cannot be read is ignored with a warning.
fn read_ini(path: &std::path::Path) -> Option<Ini> {
    let text = std::fs::read_to_string(path).ok()?;
    match parse_ini(&text) {
        Ok(ini) => Some(ini),
        Err(e) => {
            crate::output::warn(format!("ignoring {}: {e}", path.display()));
            None
        }
    }
}

/// The aws CLI's ini dialect: `[section]`, `key = value`, whole-line `#`/`;`
/// comments; values taken as written (no quotes, escapes or inline
/// comments), keys in any case, sections of one name merged.
fn parse_ini(text: &str) -> std::result::Result<Ini, ini::ParseError> {
    let options = ini::ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        ..Default::default()
    };
    let mut out = Ini::new();
    for (section, props) in ini::Ini::load_from_str_opt(text, options)?.iter() {
        let Some(section) = section else {
            continue;
        };
        let name = section.split_whitespace().collect::<Vec<_>>().join(" ");
        let keys = out.entry(name).or_default();
        for (k, v) in props.iter() {
            keys.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn locations_parse_bucket_and_prefix() {
        let l = Location::parse("s3://my-bucket/a/b/").unwrap();
        assert_eq!(l.bucket, "my-bucket");
        assert_eq!(l.prefix, "a/b");
        assert_eq!(l.url(), "s3://my-bucket/a/b");
        assert_eq!(l.object_key("backups/x"), "a/b/backups/x");
        assert_eq!(l.store_key("a/b/backups/x"), Some("backups/x"));
        assert_eq!(l.store_key("a/bc/x"), None);
        let bare = Location::parse("s3://bucket").unwrap();
        assert_eq!(bare.prefix, "");
        assert_eq!(bare.object_key("k"), "k");
        assert_eq!(bare.url(), "s3://bucket");
        for bad in [
            "s3://",
            "s3://B",
            "s3://b/x",
            "s3://bucket/a//b",
            "s3://bucket/../x",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn environment_credentials_win_over_profiles() {
        let (_dir, creds) = crate::testing::temp_file(
            "credentials",
            "[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = filesecret\n\n[ops]\n# comment\naws_access_key_id=OPSKEY\naws_secret_access_key=opssecret\naws_session_token = tok\n",
        );
        let creds = creds.to_str().unwrap();
        let s = settings(&env_of(&[
            ("AWS_SHARED_CREDENTIALS_FILE", creds),
            ("AWS_ACCESS_KEY_ID", "ENVKEY"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
        ]))
        .unwrap();
        assert_eq!(s.credentials.fixed().key_id, "ENVKEY");
        let s = settings(&env_of(&[("AWS_SHARED_CREDENTIALS_FILE", creds)])).unwrap();
        assert_eq!(s.credentials.fixed().key_id, "FILEKEY");
        let s = settings(&env_of(&[
            ("AWS_SHARED_CREDENTIALS_FILE", creds),
            ("AWS_PROFILE", "ops"),
        ]))
        .unwrap();
        assert_eq!(
            (
                s.credentials.fixed().key_id.as_str(),
                s.credentials.fixed().token.as_deref()
            ),
            ("OPSKEY", Some("tok"))
        );
        assert!(!format!("{:?}", s.credentials).contains("opssecret"));
        let e = settings(&env_of(&[
            ("AWS_SHARED_CREDENTIALS_FILE", creds),
            ("AWS_PROFILE", "nope"),
        ]))
        .unwrap_err();
        assert_eq!(e.code(), crate::ExitCode::Usage);
        assert!(settings(&env_of(&[
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
            ("AWS_EC2_METADATA_DISABLED", "true")
        ]))
        .is_err());
        // Without keys anywhere, the instance metadata service is asked.
        let s = settings(&env_of(&[("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")])).unwrap();
        assert!(matches!(
            s.credentials,
            Source::Fetched(Provider::Instance { .. })
        ));
    }

    #[test]
    fn ini_files_read_as_the_aws_cli_reads_them() {
        let ini = parse_ini(
            "; a comment\n# another\n[default]\nAWS_Access_Key_ID = K1\n\n[profile   ops ]\nregion=eu-west-3\naws_session_token = FwoGZXIvYXdzE+/abc==\naws_secret_access_key = s#not;a comment\n[default]\nregion = us-west-2\n",
        )
        .unwrap();
        let default = &ini["default"];
        assert_eq!(default["aws_access_key_id"], "K1", "keys in any case");
        assert_eq!(default["region"], "us-west-2", "sections of one name merge");
        let ops = &ini["profile ops"];
        assert_eq!(ops["aws_session_token"], "FwoGZXIvYXdzE+/abc==");
        assert_eq!(ops["aws_secret_access_key"], "s#not;a comment");
        assert_eq!(ini.len(), 2);
    }

    #[test]
    fn profiles_are_profile_x_in_the_config_file_and_x_in_the_credentials_file() {
        let dir = tempfile::tempdir().unwrap();
        let (config, creds) = (dir.path().join("config"), dir.path().join("credentials"));
        let write = |config_text: &str, creds_text: &str| {
            std::fs::write(&config, config_text).unwrap();
            std::fs::write(&creds, creds_text).unwrap();
        };
        let env = [
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
            ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
            ("AWS_PROFILE", "ops"),
        ];
        // The wrong spelling in each file is not the profile.
        write(
            "[ops]\naws_access_key_id = WRONG\naws_secret_access_key = S\nregion = ap-south-1\n",
            "[profile ops]\naws_access_key_id = WRONG\naws_secret_access_key = S\n",
        );
        let e = settings(&env_of(&env)).unwrap_err();
        assert_eq!(e.code(), crate::ExitCode::Usage);
        write(
            "[profile ops]\nregion = ap-south-1\n[default]\nregion = eu-north-1\n",
            "[ops]\naws_access_key_id = OPS\naws_secret_access_key = S\n",
        );
        let s = settings(&env_of(&env)).unwrap();
        let got = (s.credentials.fixed().key_id.as_str(), s.region.as_str());
        assert_eq!(got, ("OPS", "ap-south-1"));
        assert!(s.credentials.fixed().source.starts_with("profile ops in "));
        // The default profile is `[default]` in both files.
        write(
            "[profile ops]\nregion = ap-south-1\n[default]\nregion = eu-north-1\n",
            "[default]\naws_access_key_id = DEF\naws_secret_access_key = S\n",
        );
        let s = settings(&env_of(&env[..2])).unwrap();
        let got = (s.credentials.fixed().key_id.as_str(), s.region.as_str());
        assert_eq!(got, ("DEF", "eu-north-1"));
    }

    #[test]
    fn region_and_profile_config_come_from_the_config_file() {
        let (_dir, config) = crate::testing::temp_file(
            "config",
            "[profile ops]\nregion = eu-west-3\naws_access_key_id = K\naws_secret_access_key = S\n",
        );
        let s = settings(&env_of(&[
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
            ("AWS_PROFILE", "ops"),
        ]))
        .unwrap();
        assert_eq!(s.region, "eu-west-3");
        assert_eq!(s.endpoint, "https://s3.eu-west-3.amazonaws.com");
        assert!(!s.path_style);
        assert_eq!(s.part_size, DEFAULT_PART_SIZE);
    }

    #[test]
    fn endpoints_path_style_and_tuning_are_read_and_checked() {
        let base = [("AWS_ACCESS_KEY_ID", "K"), ("AWS_SECRET_ACCESS_KEY", "S")];
        let with = |extra: &[(&str, &str)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            settings(&env_of(&v))
        };
        let s = with(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")]).unwrap();
        assert!(s.path_style);
        assert_eq!(s.region, "us-east-1");
        let s = with(&[
            ("AWS_ENDPOINT_URL", "https://minio.example"),
            ("DBSAFE_S3_PATH_STYLE", "true"),
            ("DBSAFE_S3_PART_SIZE", "5M"),
            ("DBSAFE_S3_RETRIES", "2"),
        ])
        .unwrap();
        assert!(s.path_style);
        assert_eq!((s.part_size, s.attempts), (5 << 20, 2));
        assert!(
            !with(&[("AWS_ENDPOINT_URL", "https://minio.example")])
                .unwrap()
                .path_style
        );
        assert!(with(&[("DBSAFE_S3_PART_SIZE", "1M")]).is_err());
        assert!(with(&[("DBSAFE_S3_RETRIES", "0")]).is_err());
        assert!(with(&[("DBSAFE_S3_PATH_STYLE", "maybe")]).is_err());
        assert!(settings(&env_of(&[("AWS_ACCESS_KEY_ID", "K")])).is_err());
    }
}
