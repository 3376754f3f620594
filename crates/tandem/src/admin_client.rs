//! `tandem status | drain | enable | reload`: small HTTP calls to the admin
//! endpoint of a running tandem.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::cli::AdminArgs;

/// Where to reach the admin endpoint, and with which token.
struct Target {
    address: SocketAddr,
    token: Option<String>,
}

const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

fn target(args: &AdminArgs) -> anyhow::Result<Target> {
    let config = tandem_config::load(&args.config).ok();
    let admin = config.as_ref().and_then(|c| c.admin.as_ref());
    let address = match (&args.admin, admin) {
        (Some(a), _) => a
            .parse()
            .with_context(|| format!("--admin {a}: not an address:port"))?,
        (None, Some(a)) => a.listen,
        (None, None) => DEFAULT_ADMIN.parse().context("default admin address")?,
    };
    let token_file = args
        .token_file
        .clone()
        .or_else(|| admin.and_then(|a| a.token_file.clone()));
    let token = match token_file {
        Some(path) => Some(read_token(&path)?),
        None => None,
    };
    Ok(Target { address, token })
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("cannot read token file {}", path.display()))?
        .trim()
        .to_owned())
}

/// Sends one request; returns (status code, body).
fn call(target: &Target, method: &str, path: &str, accept: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&target.address, Duration::from_secs(3))
        .with_context(|| {
            format!(
                "cannot reach tandem's admin endpoint at {} (is tandem running, with an `admin:` section?)",
                target.address
            )
        })?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAccept: {accept}\r\nConnection: close\r\nContent-Length: 0\r\n",
        target.address
    );
    if let Some(t) = &target.token {
        request.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("malformed response from the admin endpoint")?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("malformed status line from the admin endpoint")?;
    Ok((code, body.to_owned()))
}

fn finish(code: u16, body: &str) -> anyhow::Result<ExitCode> {
    if (200..300).contains(&code) {
        print!("{body}");
        Ok(ExitCode::SUCCESS)
    } else {
        bail!("admin endpoint answered {code}: {}", body.trim())
    }
}

pub fn status(args: &AdminArgs, json: bool) -> anyhow::Result<ExitCode> {
    let target = target(args)?;
    let accept = if json {
        "application/json"
    } else {
        "text/plain"
    };
    let (code, body) = call(&target, "GET", "/status", accept)?;
    finish(code, &body)
}

pub fn set_draining(
    args: &AdminArgs,
    service: &str,
    backend: &str,
    draining: bool,
) -> anyhow::Result<ExitCode> {
    let target = target(args)?;
    let action = if draining { "drain" } else { "enable" };
    let (code, body) = call(
        &target,
        "POST",
        &format!("/backends/{service}/{backend}/{action}"),
        "text/plain",
    )?;
    finish(code, &body)
}

pub fn set_maintenance(args: &AdminArgs, on: bool) -> anyhow::Result<ExitCode> {
    let target = target(args)?;
    let path = if on {
        "/maintenance/on"
    } else {
        "/maintenance/off"
    };
    let (code, body) = call(&target, "POST", path, "text/plain")?;
    finish(code, &body)
}

pub fn reload(args: &AdminArgs) -> anyhow::Result<ExitCode> {
    let target = target(args)?;
    let (code, body) = call(&target, "POST", "/reload", "text/plain")?;
    finish(code, &body)
}
