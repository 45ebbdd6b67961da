//! Add Registry: one form per registry type (seed 004's fields, and the credentials the API
//! accepts for Harbor, ECR, ACR and Artifact Registry), chosen without script by a `GET`
//! form that reloads the page with the type.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use imagelib_console::layout::{FieldAttrs, csrf_field, field_error, text_field};
use imagelib_console::{CsrfForm, Markup, Nav, Viewer, html, page_with_status};
use imagelib_events::model::RegistryType;
use imagelib_platform::Problem;
use imagelib_platform::auth::Role;
use secrecy::SecretString;
use serde::Deserialize;

use super::{error_summary, form_errors};
use crate::app::Registries;
use crate::domain::credentials::Credentials;
use crate::domain::registry::RegisterRequest;

/// How a type's credentials are entered.
#[derive(Debug, Clone, Copy)]
pub(super) enum Creds {
    /// Username and password (or token as password).
    Basic {
        user: &'static str,
        user_hint: Option<&'static str>,
        secret: &'static str,
        secret_hint: Option<&'static str>,
    },
    /// An AWS access key.
    Ecr,
    /// The admin user, or a service principal.
    Acr,
}

/// A registry type as the form shows it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Kind {
    pub key: &'static str,
    pub registry_type: RegistryType,
    pub title: &'static str,
    /// `None`: the type has one address (Docker Hub, GitHub), filled in for the user.
    pub url: Option<(&'static str, &'static str)>,
    pub fixed_url: &'static str,
    pub creds: Creds,
    pub insecure: bool,
}

pub(super) const KINDS: &[Kind] = &[
    Kind {
        key: "generic",
        registry_type: RegistryType::Generic,
        title: "Docker Registry",
        url: Some((
            "Registry URL",
            "Full URL of the registry, including any namespace (e.g. registry.example.com:5000/team or aws_account_id.dkr.ecr.region.amazonaws.com/namespace).",
        )),
        fixed_url: "",
        creds: Creds::Basic {
            user: "Username",
            user_hint: Some(
                "Leave username and password empty for a registry open to anonymous reads.",
            ),
            secret: "Password / Token",
            secret_hint: None,
        },
        insecure: true,
    },
    Kind {
        key: "dockerhub",
        registry_type: RegistryType::Dockerhub,
        title: "Docker Hub",
        url: None,
        fixed_url: "registry-1.docker.io",
        creds: Creds::Basic {
            user: "Docker Hub Username",
            user_hint: None,
            secret: "Access Token",
            secret_hint: Some("A Docker Hub access token with read access to the images."),
        },
        insecure: false,
    },
    Kind {
        key: "ghcr",
        registry_type: RegistryType::Ghcr,
        title: "GitHub",
        url: None,
        fixed_url: "ghcr.io",
        creds: Creds::Basic {
            user: "GitHub Username",
            user_hint: None,
            secret: "Personal Access Token",
            secret_hint: Some("A GitHub personal access token with the read:packages scope."),
        },
        insecure: false,
    },
    Kind {
        key: "harbor",
        registry_type: RegistryType::Harbor,
        title: "Harbor",
        url: Some((
            "Harbor URL",
            "host[:port][/project], e.g. harbor.example.com/ai.",
        )),
        fixed_url: "",
        creds: Creds::Basic {
            user: "Robot account",
            user_hint: Some("robot$<project>+<name> or robot$<name>."),
            secret: "Robot secret",
            secret_hint: None,
        },
        insecure: true,
    },
    Kind {
        key: "ecr",
        registry_type: RegistryType::Ecr,
        title: "Amazon ECR",
        url: Some((
            "Registry URL",
            "aws_account_id.dkr.ecr.region.amazonaws.com, optionally with a namespace.",
        )),
        fixed_url: "",
        creds: Creds::Ecr,
        insecure: false,
    },
    Kind {
        key: "acr",
        registry_type: RegistryType::Acr,
        title: "Azure Container Registry",
        url: Some(("Registry URL", "myregistry.azurecr.io")),
        fixed_url: "",
        creds: Creds::Acr,
        insecure: false,
    },
    Kind {
        key: "gcr",
        registry_type: RegistryType::Gcr,
        title: "Google Artifact Registry",
        url: Some((
            "Registry URL",
            "REGION-docker.pkg.dev/PROJECT (or gcr.io/PROJECT).",
        )),
        fixed_url: "",
        creds: Creds::Basic {
            user: "Username",
            user_hint: Some(
                "_json_key with a service account key, or oauth2accesstoken with an access token.",
            ),
            secret: "Key JSON / access token",
            secret_hint: None,
        },
        insecure: false,
    },
];

pub(super) fn kind_by_key(key: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.key == key)
}

pub(super) fn kind_of(t: RegistryType) -> &'static Kind {
    KINDS
        .iter()
        .find(|k| k.registry_type == t)
        .unwrap_or(&KINDS[0])
}

/// The fields of the add and rotate forms. Secrets are read, used once and dropped: they
/// are never rendered back.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RegistryForm {
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub registry_type: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub access_key_id: String,
    #[serde(default)]
    pub secret_access_key: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub session_token: String,
    #[serde(default)]
    pub tenant_id: String,
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub client_secret: String,
    #[serde(default)]
    pub repositories: String,
    #[serde(default)]
    pub visibility: String,
    #[serde(default)]
    pub scan_interval: String,
    pub insecure: Option<String>,
    pub skip_validation: Option<String>,
}

fn checked(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|v| !v.is_empty() && v != "false")
}

impl RegistryForm {
    /// The credentials the form describes for `kind`; empty fields mean anonymous access.
    pub(super) fn credentials(&self, kind: &Kind) -> Credentials {
        let t = |s: &str| s.trim().to_owned();
        let basic = || {
            if self.username.trim().is_empty() && self.password.is_empty() {
                Credentials::None
            } else {
                Credentials::Basic {
                    username: t(&self.username),
                    password: SecretString::from(self.password.trim().to_owned()),
                }
            }
        };
        match kind.creds {
            Creds::Basic { .. } => basic(),
            Creds::Ecr => {
                if [&self.access_key_id, &self.secret_access_key, &self.region]
                    .iter()
                    .all(|s| s.trim().is_empty())
                {
                    Credentials::None
                } else {
                    Credentials::AwsEcr {
                        access_key_id: t(&self.access_key_id),
                        secret_access_key: SecretString::from(t(&self.secret_access_key)),
                        region: t(&self.region),
                        session_token: (!self.session_token.trim().is_empty())
                            .then(|| SecretString::from(t(&self.session_token))),
                    }
                }
            }
            Creds::Acr => {
                if [&self.tenant_id, &self.client_id, &self.client_secret]
                    .iter()
                    .any(|s| !s.trim().is_empty())
                {
                    Credentials::AzureServicePrincipal {
                        tenant_id: t(&self.tenant_id),
                        client_id: t(&self.client_id),
                        client_secret: SecretString::from(t(&self.client_secret)),
                    }
                } else {
                    basic()
                }
            }
        }
    }

    /// The field a refusal of the credentials (`unauthorized`, `forbidden`) is shown at.
    pub(super) fn secret_field(&self, kind: &Kind) -> &'static str {
        match kind.creds {
            Creds::Ecr => "secret_access_key",
            Creds::Acr if !self.tenant_id.trim().is_empty() => "client_secret",
            _ => "password",
        }
    }

    fn lines(s: &str, split: &[char]) -> Vec<String> {
        s.split(split)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// The credential fields of `kind` (never with a value: secrets are not echoed).
pub(super) fn credential_fields(
    kind: &Kind,
    form: &RegistryForm,
    errors: &[(String, String)],
) -> Markup {
    let secret = |name: &str, label: &str, hint: Option<&str>| {
        text_field(
            name,
            label,
            "",
            errors,
            FieldAttrs {
                kind: "password",
                hint,
                ..Default::default()
            },
        )
    };
    let plain = |name: &str, label: &str, value: &str, hint: Option<&str>| {
        text_field(
            name,
            label,
            value,
            errors,
            FieldAttrs {
                hint,
                ..Default::default()
            },
        )
    };
    match kind.creds {
        Creds::Basic {
            user,
            user_hint,
            secret: secret_label,
            secret_hint,
        } => html! {
            (plain("username", user, &form.username, user_hint))
            (secret("password", secret_label, secret_hint))
        },
        Creds::Ecr => html! {
            (plain("access_key_id", "AWS access key ID", &form.access_key_id, Some("Exchanged for 12-hour ECR tokens; leave the key fields empty for anonymous access.")))
            (secret("secret_access_key", "AWS secret access key", None))
            (plain("region", "AWS region", &form.region, Some("e.g. eu-west-1")))
            (secret("session_token", "Session token (optional)", None))
        },
        Creds::Acr => html! {
            fieldset {
                legend { "Admin user" }
                (plain("username", "Username", &form.username, None))
                (secret("password", "Password", None))
            }
            fieldset {
                legend { "Or a service principal" }
                (plain("tenant_id", "Tenant ID", &form.tenant_id, None))
                (plain("client_id", "Client ID", &form.client_id, None))
                (secret("client_secret", "Client secret", Some("Used instead of the admin user when filled in.")))
            }
        },
    }
}

pub(super) fn checkbox(name: &str, label: &str, on: bool, hint: Option<&str>) -> Markup {
    let id = format!("f-{name}");
    html! {
        div.check {
            input type="checkbox" id=(id) name=(name) value="true" checked[on];
            " "
            label for=(id) { (label) }
            @if let Some(h) = hint { br; small.hint { (h) } }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct NewQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
    registry_type: Option<String>,
}

fn add_page(
    v: &Viewer,
    status: StatusCode,
    kind: &Kind,
    form: &RegistryForm,
    errors: &[(String, String)],
) -> Response {
    let field = |name: &str, label: &str, value: &str, attrs: FieldAttrs<'_>| {
        text_field(name, label, value, errors, attrs)
    };
    let body = html! {
        h1 { "Add Registry" }
        form.filters method="get" action="/registries/new" data-autosubmit {
            div.field {
                label for="f-registry_type" { "Registry type" }
                select id="f-registry_type" name="registry_type" {
                    @for k in KINDS {
                        option value=(k.key) selected[k.key == kind.key] { (k.title) }
                    }
                }
                @if let Some(e) = field_error(errors, "registry_type") { p.field-error { (e) } }
            }
            button.secondary type="submit" { "Show fields" }
        }
        h2 { (kind.title) }
        (error_summary(errors))
        form method="post" action="/registries" {
            (csrf_field(v))
            input type="hidden" name="registry_type" value=(kind.key);
            (field("label", "Name", &form.label, FieldAttrs { required: true, hint: Some("Display name for this registry."), ..Default::default() }))
            @if let Some((label, hint)) = kind.url {
                (field("url", label, &form.url, FieldAttrs { required: true, hint: Some(hint), ..Default::default() }))
            } @else {
                input type="hidden" name="url" value=(kind.fixed_url);
                @if let Some(e) = field_error(errors, "url") { p.field-error role="alert" { "Address " (kind.fixed_url) ": " (e) } }
            }
            (credential_fields(kind, form, errors))
            (field("repositories", "Repositories to scan", &form.repositories, FieldAttrs {
                multiline: true,
                hint: Some("Only for a registry without a usable catalog (Docker Hub, GitHub, ECR without the permission): one repository a line, e.g. library/postgres."),
                ..Default::default()
            }))
            (field("visibility", "Visible to teams", &form.visibility, FieldAttrs { hint: Some("Comma-separated team names; empty: everyone."), ..Default::default() }))
            (field("scan_interval", "Scan interval (seconds)", &form.scan_interval, FieldAttrs { kind: "number", hint: Some("60 to 604800; empty: the scanner's default."), ..Default::default() }))
            @if kind.insecure {
                (checkbox("insecure", "Plain HTTP (no TLS)", checked(&form.insecure), None))
            }
            (checkbox("skip_validation", "Save without checking the connection", checked(&form.skip_validation), Some("The registry is checked before it is saved unless this is ticked; it is then shown as pending.")))
            @if let Some(e) = field_error(errors, "form") { p.field-error { (e) } }
            button type="submit" { "Add registry" }
        }
        p { a href="/registries" { "Back to Manage Repositories" } }
    };
    page_with_status(status, v, Nav::Registries, "Add Registry", body)
}

pub(super) async fn new_form(v: Viewer, Query(q): Query<NewQuery>) -> Response {
    if let Err(res) = v.require(Role::Admin) {
        return res;
    }
    let key = q.kind.or(q.registry_type).unwrap_or_default();
    let kind = kind_by_key(&key).unwrap_or(&KINDS[0]);
    add_page(&v, StatusCode::OK, kind, &RegistryForm::default(), &[])
}

pub(super) async fn register(
    State(app): State<Arc<Registries>>,
    headers: HeaderMap,
    CsrfForm { viewer: v, form }: CsrfForm<RegistryForm>,
) -> Response {
    if let Err(res) = v.require(Role::Admin) {
        return res;
    }
    let Some(kind) = kind_by_key(&form.registry_type) else {
        let errors = vec![(
            "registry_type".to_owned(),
            "choose one of the listed registry types".to_owned(),
        )];
        return add_page(
            &v,
            StatusCode::UNPROCESSABLE_ENTITY,
            &KINDS[0],
            &form,
            &errors,
        );
    };
    let scan_interval_secs = match form.scan_interval.trim() {
        "" => None,
        s => match s.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                let errors = vec![(
                    "scan_interval".to_owned(),
                    "a whole number of seconds".to_owned(),
                )];
                return add_page(&v, StatusCode::UNPROCESSABLE_ENTITY, kind, &form, &errors);
            }
        },
    };
    let url = match kind.url {
        Some(_) => form.url.trim().to_owned(),
        None => kind.fixed_url.to_owned(),
    };
    let req = RegisterRequest {
        label: form.label.clone(),
        url,
        registry_type: kind.registry_type,
        insecure: kind.insecure && checked(&form.insecure),
        ca_pem: None,
        visibility: RegistryForm::lines(&form.visibility, &[',', '\n']),
        credentials: form.credentials(kind),
        scan_interval_secs,
        repositories: RegistryForm::lines(&form.repositories, &['\n', ',']),
        auth_hosts: vec![],
        report_pulls: false,
        validate: !checked(&form.skip_validation),
    };
    match app
        .register(&v.caller, req, crate::api::traceparent(&headers))
        .await
    {
        Ok((r, _)) => Redirect::to(&format!("/registries/{}?done=added", r.id)).into_response(),
        Err(e) => {
            let p = Problem::from(e);
            if p.status >= 500 || matches!(p.status, 404 | 409) {
                return super::problem_page(&v, &p);
            }
            let errors = form_errors(&p, form.secret_field(kind));
            add_page(&v, StatusCode::UNPROCESSABLE_ENTITY, kind, &form, &errors)
        }
    }
}
