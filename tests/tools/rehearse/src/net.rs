//! Where a rehearsal points: `http://host:port` locally, or `https://host[:port][/stage]` for a
//! deployed API (API Gateway stages live under a path prefix). TLS is rustls on ring, trusting the
//! Mozilla roots (webpki-roots, so the result does not depend on this machine's CA bundle) plus any
//! `--ca-cert` PEM, e.g. a staging endpoint's private CA or a test's self-signed certificate.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

use hyper::Uri;
use hyper::header::HeaderValue;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::RehearseError;

/// A resolved rehearsal target.
#[derive(Clone)]
pub struct Target {
    /// The address every load connection dials (resolved once, so DNS is not part of the load).
    pub addr: SocketAddr,
    /// The `Host` header: the URL's authority as written.
    pub host: HeaderValue,
    /// `scheme://authority/prefix` without a trailing slash: what API paths are appended to.
    pub base: String,
    /// The stage path (`""` or `/prod`), prepended to every raw load request's path.
    pub prefix: String,
    /// Set for `https://`: the connector and the name the certificate must carry (SNI).
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Target {
    /// Parses and resolves `url`; refuses non-loopback targets unless `allow_remote`.
    pub fn parse(url: &str, allow_remote: bool, tls: &Arc<ClientConfig>) -> Result<Self, RehearseError> {
        let bad = || RehearseError::BadUrl(url.into());
        let uri: Uri = url.parse().map_err(|_| bad())?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad()),
        };
        if uri.query().is_some() {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?;
        // userinfo (`user:pw@host`) would be sent nowhere and only confuses the Host header.
        if authority.as_str().contains('@') {
            return Err(bad());
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host_name = authority.host();
        // `[::1]` in a URL is `::1` for the resolver and for SNI.
        let bare = host_name.trim_start_matches('[').trim_end_matches(']');
        let addr = (bare, port).to_socket_addrs().ok().and_then(|mut a| a.next()).ok_or_else(bad)?;
        if !addr.ip().is_loopback() && !allow_remote {
            return Err(RehearseError::NotLoopback(url.into()));
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        let tls = if https {
            let name = ServerName::try_from(bare.to_owned()).map_err(|_| bad())?;
            Some((TlsConnector::from(tls.clone()), name))
        } else {
            None
        };
        Ok(Self {
            addr,
            host: HeaderValue::from_str(authority.as_str()).map_err(|_| bad())?,
            base: format!("{}://{}{prefix}", if https { "https" } else { "http" }, authority.as_str()),
            prefix,
            tls,
        })
    }

    /// An API path (`/api/...`) as the load engine sends it: under the stage prefix.
    pub fn path(&self, api_path: &str) -> Arc<str> {
        Arc::from(format!("{}{api_path}", self.prefix))
    }
}

/// The rustls client configuration: Mozilla roots plus every certificate in `ca_cert` (PEM).
pub fn client_config(ca_cert: Option<&Path>) -> Result<Arc<ClientConfig>, RehearseError> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).map_err(|source| RehearseError::File { path: path.into(), source })?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| RehearseError::CaCert { path: path.into(), why: e.to_string() })?;
            roots.add(cert).map_err(|e| RehearseError::CaCert { path: path.into(), why: e.to_string() })?;
            added += 1;
        }
        if added == 0 {
            return Err(RehearseError::CaCert { path: path.into(), why: "no PEM certificate in it".into() });
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls' default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str, remote: bool) -> Result<Target, RehearseError> {
        Target::parse(url, remote, &client_config(None).unwrap())
    }

    #[test]
    fn http_and_https_targets_keep_their_authority_and_stage_path() {
        let t = parse("http://127.0.0.1:8080/", false).unwrap();
        assert_eq!((t.addr.port(), t.base.as_str(), t.prefix.as_str()), (8080, "http://127.0.0.1:8080", ""));
        assert!(t.tls.is_none());
        assert_eq!(&*t.path("/healthz"), "/healthz");

        // An API Gateway stage: default port 443, SNI is the host, paths go under the stage.
        let t = parse("https://localhost/prod/", false).unwrap();
        assert_eq!(
            (t.addr.port(), t.base.as_str(), t.host.to_str().unwrap()),
            (443, "https://localhost/prod", "localhost")
        );
        assert_eq!(&*t.path("/api/campaigns/x/claims"), "/prod/api/campaigns/x/claims");
        assert!(matches!(&t.tls, Some((_, ServerName::DnsName(n))) if n.as_ref() == "localhost"));

        let t = parse("https://[::1]:8443", false).unwrap();
        assert!(matches!(&t.tls, Some((_, ServerName::IpAddress(_)))));
        assert_eq!(t.addr.port(), 8443);
    }

    #[test]
    fn odd_urls_and_remote_targets_are_refused_with_a_reason() {
        for bad in ["ftp://127.0.0.1:21", "127.0.0.1:8080", "http://127.0.0.1:8080/?x=1", "http://u:p@127.0.0.1:80", ""]
        {
            assert!(matches!(parse(bad, true), Err(RehearseError::BadUrl(_))), "{bad}");
        }
        assert!(matches!(parse("http://10.1.2.3:80", false), Err(RehearseError::NotLoopback(_))));
        assert!(parse("http://10.1.2.3:80", true).is_ok());
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("rehearse-ca-{}", std::process::id()));
        std::fs::write(&dir, "not a certificate\n").unwrap();
        let err = client_config(Some(&dir)).err().unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        assert!(matches!(client_config(Some(Path::new("/nonexistent/ca.pem"))), Err(RehearseError::File { .. })));
    }
}
