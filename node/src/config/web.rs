//! The `[web]` section: the pages every node serves and the other sites allowed to embed the
//! customer widget (CORS on the API, an Origin check on WebSocket upgrades).

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// Most origins `web.allowed_origins` may list.
pub const ALLOWED_ORIGINS_MAX: usize = 64;
/// Longest origin accepted, in bytes.
pub const ORIGIN_BYTES_MAX: usize = 253 + 16;

/// `[web]` as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeb {
    /// Origins of other sites whose pages may call the API and open streams, e.g.
    /// `["https://shop.example.com"]`: scheme `http` or `https`, a host, an optional port, no
    /// path. The node's own origin and every member's HTTP address are always allowed (a page
    /// moves between nodes). Default none. `"*"` is refused: list the sites.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Whether this node serves the pages (`/chat`, `/agent`, `/supervisor`, `/admin`). Default
    /// true.
    #[serde(default = "default_pages")]
    pub pages: bool,
}

fn default_pages() -> bool {
    true
}

impl Default for RawWeb {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            pages: default_pages(),
        }
    }
}

/// `[web]`, validated.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// Allowed foreign origins, normalised (`scheme://host[:port]`, lowercase, no default port).
    pub allowed_origins: Vec<String>,
    /// Whether the pages are served.
    pub pages: bool,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            pages: true,
        }
    }
}

impl RawWeb {
    /// Checks every origin.
    pub fn validate(&self) -> Result<WebConfig, ConfigError> {
        if self.allowed_origins.len() > ALLOWED_ORIGINS_MAX {
            return Err(invalid(
                "web.allowed_origins",
                format!("at most {ALLOWED_ORIGINS_MAX} origins"),
            ));
        }
        let mut allowed_origins = Vec::with_capacity(self.allowed_origins.len());
        for (i, origin) in self.allowed_origins.iter().enumerate() {
            let normal = normalise_origin(origin).map_err(|problem| {
                invalid(
                    format!("web.allowed_origins[{i}]"),
                    format!("{origin:?}: {problem}"),
                )
            })?;
            if !allowed_origins.contains(&normal) {
                allowed_origins.push(normal);
            }
        }
        Ok(WebConfig {
            allowed_origins,
            pages: self.pages,
        })
    }
}

/// `origin` as browsers send it in an `Origin` header: `scheme://host[:port]`, lowercase, the
/// scheme's default port left out. Refuses paths, user info, wildcards and other schemes.
pub fn normalise_origin(origin: &str) -> Result<String, &'static str> {
    if origin.len() > ORIGIN_BYTES_MAX {
        return Err("too long");
    }
    let lower = origin.trim().to_ascii_lowercase();
    let (scheme, rest) = lower
        .split_once("://")
        .ok_or("expected scheme://host[:port]")?;
    let default_port = match scheme {
        "http" => "80",
        "https" => "443",
        _ => return Err("the scheme must be http or https"),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err("no host");
    }
    if rest.contains(['/', '?', '#', '@', '*', ' ']) {
        return Err("an origin has no path, query, user or wildcard");
    }
    // A bracketed IPv6 host keeps its colons; a port follows the last ']' or the only ':'.
    let (host, port) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains(']') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if host.is_empty() || host.contains(':') && !host.starts_with('[') {
        return Err("malformed host");
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'[' | b']' | b':'))
    {
        return Err("the host may hold only letters, digits, '-', '.' (or an IPv6 address in [])");
    }
    match port {
        None => Ok(format!("{scheme}://{host}")),
        Some(port) if port.parse::<u16>().is_err() || port.is_empty() => Err("malformed port"),
        Some(port) if port == default_port => Ok(format!("{scheme}://{host}")),
        Some(port) => Ok(format!("{scheme}://{host}:{port}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised_as_browsers_send_them() {
        assert_eq!(
            normalise_origin("HTTPS://Shop.Example.com:443").as_deref(),
            Ok("https://shop.example.com")
        );
        assert_eq!(
            normalise_origin("http://127.0.0.1:8001/").as_deref(),
            Ok("http://127.0.0.1:8001")
        );
        assert_eq!(
            normalise_origin("http://[::1]:8080").as_deref(),
            Ok("http://[::1]:8080")
        );
    }

    #[test]
    fn malformed_origins_are_refused() {
        for bad in [
            "*",
            "shop.example.com",
            "ftp://shop.example.com",
            "https://shop.example.com/path",
            "https://*.example.com",
            "https://user@shop.example.com",
            "https://shop.example.com:99999",
            "https://",
        ] {
            assert!(normalise_origin(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn a_config_without_the_section_serves_the_pages() {
        let web = RawWeb::default().validate().map(|w| w.pages);
        assert!(matches!(web, Ok(true)));
    }

    #[test]
    fn the_section_refuses_a_bad_entry_and_names_it() {
        let raw = RawWeb {
            allowed_origins: vec!["https://a.example".into(), "*".into()],
            pages: true,
        };
        let error = raw.validate().map(|_| ()).unwrap_err().to_string();
        assert!(error.contains("web.allowed_origins[1]"), "{error}");
    }
}
