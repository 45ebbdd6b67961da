//! Add Registry: the fields of each registry type come from its profile
//! ([`crate::domain::profiles`], also served as `GET /v1/registry-types`). Every field of
//! every type is in the one form, those of other types `hidden` and `disabled` (so they are
//! neither shown nor sent); without script a `GET` form reloads the page with the chosen
//! type, with script (`console.js`, `data-registry-form`) the type select shows and hides
//! the fields in place, with each type's labels, help and defaults from `data-profile`.

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
use crate::domain::profiles::{self, PROFILES, Profile};
use crate::domain::registry::RegisterRequest;

/// How a type's credentials are read from the form.
#[derive(Debug, Clone, Copy)]
pub(super) enum Creds {
    /// Username and password (or token as password).
    Basic,
    /// An AWS access key.
    Ecr,
    /// A service principal, or the admin user.
    Acr,
}

/// A registry type as the form handles it: its profile, and how its credentials are read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Kind {
    pub profile: &'static Profile,
    pub creds: Creds,
}

impl Kind {
    pub fn key(&self) -> &'static str {
        self.profile.key
    }

    pub fn registry_type(&self) -> RegistryType {
        self.profile.registry_type
    }
}

#[cfg(test)]
fn creds_of(t: RegistryType) -> Creds {
    match t {
        RegistryType::Ecr => Creds::Ecr,
        RegistryType::Acr => Creds::Acr,
        _ => Creds::Basic,
    }
}

/// Each profile with how its credentials are read, in the profiles' order.
static KINDS: [Kind; 7] = [
    Kind {
        profile: &PROFILES[0],
        creds: Creds::Basic,
    },
    Kind {
        profile: &PROFILES[1],
        creds: Creds::Basic,
    },
    Kind {
        profile: &PROFILES[2],
        creds: Creds::Basic,
    },
    Kind {
        profile: &PROFILES[3],
        creds: Creds::Basic,
    },
    Kind {
        profile: &PROFILES[4],
        creds: Creds::Ecr,
    },
    Kind {
        profile: &PROFILES[5],
        creds: Creds::Acr,
    },
    Kind {
        profile: &PROFILES[6],
        creds: Creds::Basic,
    },
];

pub(super) fn kind_by_key(key: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.key() == key)
}

pub(super) fn kind_of(t: RegistryType) -> &'static Kind {
    KINDS
        .iter()
        .find(|k| k.registry_type() == t)
        .unwrap_or(&KINDS[0])
}

fn first_kind() -> &'static Kind {
    &KINDS[0]
}

/// The form's fields, every type's, in the order they are shown.
const FORM_FIELDS: [&str; 18] = [
    "label",
    "url",
    "namespace",
    "tenant_id",
    "client_id",
    "client_secret",
    "access_key_id",
    "secret_access_key",
    "region",
    "session_token",
    "role_arn",
    "username",
    "password",
    "key_json",
    "artifact_registry",
    "app_id",
    "installation_id",
    "private_key",
];

/// The fields of the add and rotate forms. Secrets are read, used once and dropped: they
/// are never rendered back.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RegistryForm {
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub namespace: String,
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
    pub role_arn: String,
    #[serde(default)]
    pub key_json: String,
    #[serde(default)]
    pub app_id: String,
    #[serde(default)]
    pub installation_id: String,
    #[serde(default)]
    pub private_key: String,
    /// The kind chosen for a type with several (empty: inferred from the fields filled in).
    #[serde(default)]
    pub credential_kind: String,
    #[serde(default)]
    pub proxy_url: String,
    #[serde(default)]
    pub no_proxy: String,
    #[serde(default)]
    pub artifact_registry: String,
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
    /// The credentials the form describes for `kind`, read as the chosen credential kind
    /// (fields of other kinds are ignored); empty fields mean anonymous access. A kind the
    /// type does not offer is refused at the `credential_kind` field.
    pub(super) fn credentials(&self, kind: &Kind) -> Result<Credentials, (String, String)> {
        let chosen = self.credential_kind.trim();
        if chosen.is_empty() {
            return Ok(self.inferred(kind));
        }
        if !kind
            .profile
            .credential_choices
            .iter()
            .any(|c| c.kind == chosen)
        {
            return Err((
                "credential_kind".to_owned(),
                format!(
                    "choose one of the credentials listed for {}",
                    kind.profile.label
                ),
            ));
        }
        let t = |s: &str| s.trim().to_owned();
        let opt = |s: &str| Some(t(s)).filter(|s| !s.is_empty());
        Ok(match chosen {
            "aws_ecr" => self.aws_key(),
            "azure_service_principal" => self.service_principal().unwrap_or(Credentials::None),
            "aws_web_identity" => Credentials::AwsWebIdentity {
                region: t(&self.region),
                role_arn: opt(&self.role_arn),
            },
            "azure_workload_identity" => Credentials::AzureWorkloadIdentity {
                tenant_id: opt(&self.tenant_id),
                client_id: opt(&self.client_id),
            },
            "gcp_service_account" => Credentials::GcpServiceAccount {
                key_json: SecretString::from(self.key_json.trim().to_owned()),
            },
            "gcp_workload_identity" => Credentials::GcpWorkloadIdentity {},
            "github_app" => Credentials::GithubApp {
                app_id: t(&self.app_id),
                installation_id: t(&self.installation_id),
                private_key: SecretString::from(self.private_key.trim().to_owned()),
            },
            _ => self.basic(),
        })
    }

    /// What a form without a chosen kind means: the fields filled in decide.
    fn inferred(&self, kind: &Kind) -> Credentials {
        match kind.creds {
            Creds::Basic => self.basic(),
            Creds::Ecr => self.aws_key(),
            Creds::Acr => self.service_principal().unwrap_or_else(|| self.basic()),
        }
    }

    fn basic(&self) -> Credentials {
        if self.username.trim().is_empty() && self.password.is_empty() {
            Credentials::None
        } else {
            Credentials::Basic {
                username: self.username.trim().to_owned(),
                password: SecretString::from(self.password.trim().to_owned()),
            }
        }
    }

    fn aws_key(&self) -> Credentials {
        let t = |s: &str| s.trim().to_owned();
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

    /// A service principal when any of its fields is filled in.
    fn service_principal(&self) -> Option<Credentials> {
        let t = |s: &str| s.trim().to_owned();
        [&self.tenant_id, &self.client_id, &self.client_secret]
            .iter()
            .any(|s| !s.trim().is_empty())
            .then(|| Credentials::AzureServicePrincipal {
                tenant_id: t(&self.tenant_id),
                client_id: t(&self.client_id),
                client_secret: SecretString::from(t(&self.client_secret)),
            })
    }

    /// The field a refusal of the credentials (`unauthorized`, `forbidden`) is shown at.
    pub(super) fn secret_field(&self, kind: &Kind) -> &'static str {
        match self.credential_kind.trim() {
            "aws_ecr" => return "secret_access_key",
            "azure_service_principal" => return "client_secret",
            "gcp_service_account" => return "key_json",
            "github_app" => return "private_key",
            "basic" => return "password",
            "aws_web_identity" | "azure_workload_identity" | "gcp_workload_identity" => {
                return "credential_kind";
            }
            _ => {}
        }
        match kind.creds {
            Creds::Ecr => "secret_access_key",
            Creds::Acr if !self.tenant_id.trim().is_empty() => "client_secret",
            _ => "password",
        }
    }

    /// A text field's value by name (never a secret's).
    fn value(&self, name: &str) -> &str {
        match name {
            "label" => &self.label,
            "url" => &self.url,
            "namespace" => &self.namespace,
            "username" => &self.username,
            "access_key_id" => &self.access_key_id,
            "region" => &self.region,
            "tenant_id" => &self.tenant_id,
            "client_id" => &self.client_id,
            "role_arn" => &self.role_arn,
            "app_id" => &self.app_id,
            "installation_id" => &self.installation_id,
            "proxy_url" => &self.proxy_url,
            "no_proxy" => &self.no_proxy,
            "artifact_registry" => &self.artifact_registry,
            _ => "",
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

/// The credential fields of `kind`, from its profile (never with a value: secrets are
/// not echoed), after the choice of credential kind when the type offers several.
pub(super) fn credential_fields(
    kind: &Kind,
    form: &RegistryForm,
    errors: &[(String, String)],
) -> Markup {
    html! {
        @if !kind.profile.credential_choices.is_empty() {
            (kind_select(kind.profile, &form.credential_kind, true, errors))
        }
        @for f in kind.profile.fields.iter().filter(|f| f.credential_kind.is_some()) {
            div data-kinds=[kinds_of(f.name)] {
                (text_field(
                    f.name,
                    f.label,
                    if f.input == "password" { "" } else { form.value(f.name) },
                    errors,
                    FieldAttrs {
                        kind: if f.input == "textarea" { "text" } else { f.input },
                        multiline: f.input == "textarea",
                        hint: (!f.help.is_empty()).then_some(f.help),
                        ..Default::default()
                    },
                ))
            }
        }
    }
}

/// The credential kinds that read field `name`, space-separated (`None`: not a
/// credential field). A name means the same kinds in every type that has it.
fn kinds_of(name: &str) -> Option<String> {
    let mut kinds: Vec<&str> = Vec::new();
    for f in PROFILES.iter().filter_map(|p| p.field(name)) {
        for k in f.credential_kind.iter().chain(f.credential_kinds) {
            if !kinds.contains(k) {
                kinds.push(k);
            }
        }
    }
    (!kinds.is_empty()).then(|| kinds.join(" "))
}

/// The choice between `p`'s credential kinds. With script, the fields of the other kinds
/// are hidden (`data-kinds`); without, they stay and are ignored.
fn kind_select(p: &Profile, chosen: &str, on: bool, errors: &[(String, String)]) -> Markup {
    let id = format!("f-credential_kind-{}", p.key);
    let chosen = if p.credential_choices.iter().any(|c| c.kind == chosen) {
        chosen
    } else {
        p.defaults.credential_kind
    };
    let err = on.then(|| field_error(errors, "credential_kind")).flatten();
    html! {
        div.field data-field="credential_kind" data-types=(p.key) hidden[!on] {
            label for=(id) { "Credentials" }
            small.hint { "Only the fields of the kind chosen here are read." }
            select id=(id) name="credential_kind" disabled[!on]
                aria-invalid=[err.map(|_| "true")] {
                @for c in p.credential_choices {
                    option value=(c.kind) selected[c.kind == chosen] { (c.label) }
                }
            }
            @if let Some(e) = err { p.field-error { (e) } }
        }
    }
}

/// What each type says about field `name` (label, help, whether it is required, its
/// placeholder and default, its input type), as the JSON `console.js` reads.
fn field_profile(name: &str) -> String {
    let per_type: serde_json::Map<String, serde_json::Value> = PROFILES
        .iter()
        .filter_map(|p| {
            p.field(name).map(|f| {
                (
                    p.key.to_owned(),
                    serde_json::json!({
                        "label": f.label,
                        "help": f.help,
                        "required": required(p, f),
                        "placeholder": f.placeholder.unwrap_or_default(),
                        "default": f.default.unwrap_or_default(),
                        "input": f.input,
                    }),
                )
            })
        })
        .collect();
    serde_json::Value::Object(per_type).to_string()
}

/// A type with a default address does not need its URL typed.
fn required(p: &Profile, f: &profiles::Field) -> bool {
    f.required && !(f.name == "url" && p.url_optional())
}

/// One field of the add form: shown and sent for `kind`'s type, `hidden` and `disabled`
/// for the others.
fn profile_field(
    name: &str,
    kind: &Kind,
    form: &RegistryForm,
    errors: &[(String, String)],
) -> Markup {
    let own = kind.profile.field(name);
    let Some(shown) = own.or_else(|| PROFILES.iter().find_map(|p| p.field(name))) else {
        return html! {};
    };
    let on = own.is_some();
    let required = own.is_some_and(|f| required(kind.profile, f));
    let id = format!("f-{name}");
    let err = field_error(errors, name);
    let err_id = format!("{id}-error");
    let hint_id = format!("{id}-hint");
    let described = if err.is_some() {
        format!("{err_id} {hint_id}")
    } else {
        hint_id.clone()
    };
    let secret = matches!(shown.input, "password" | "textarea");
    let typed = form.value(name);
    let value = if secret {
        ""
    } else if typed.is_empty() && form.label.is_empty() {
        // A fresh form: the type's default.
        shown.default.unwrap_or_default()
    } else {
        typed
    };
    html! {
        div.field data-field=(name) data-profile=(field_profile(name)) data-kinds=[kinds_of(name)] hidden[!on] {
            label for=(id) {
                span data-label { (shown.label) }
                " " span.req aria-hidden="true" hidden[!required] { "*" }
            }
            small.hint id=(hint_id) data-help hidden[shown.help.is_empty()] { (shown.help) }
            @if shown.input == "textarea" {
                textarea id=(id) name=(name) rows="6" required[required] disabled[!on]
                    aria-invalid=[err.map(|_| "true")] aria-describedby=(described)
                    autocomplete="off" spellcheck="false" {}
            } @else {
                input id=(id) name=(name) type=(shown.input) value=(value)
                    placeholder=[shown.placeholder] required[required] disabled[!on]
                    aria-invalid=[err.map(|_| "true")] aria-describedby=(described)
                    autocomplete=(if secret { "new-password" } else { "off" });
            }
            @if let Some(e) = err { p.field-error id=(err_id) { (e) } }
        }
    }
}

pub(super) fn checkbox(name: &str, label: &str, on: bool, hint: Option<&str>) -> Markup {
    checkbox_with(name, label, on, hint, false)
}

/// A checkbox, `disabled` (not sent) when it does not apply.
fn checkbox_with(name: &str, label: &str, on: bool, hint: Option<&str>, disabled: bool) -> Markup {
    let id = format!("f-{name}");
    html! {
        div.check {
            input type="checkbox" id=(id) name=(name) value="true" checked[on] disabled[disabled];
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
    let insecure_types = PROFILES
        .iter()
        .filter(|p| p.defaults.insecure_allowed)
        .map(|p| p.key)
        .collect::<Vec<_>>()
        .join(" ");
    let insecure_on = kind.profile.defaults.insecure_allowed;
    let body = html! {
        h1 { "Add Registry" }
        form.filters method="get" action="/registries/new" data-registry-types {
            div.field {
                label for="f-registry_type" { "Registry type" }
                select id="f-registry_type" name="registry_type" {
                    @for p in &PROFILES {
                        option value=(p.key) selected[p.key == kind.key()] data-description=(p.description) { (p.label) }
                    }
                }
                @if let Some(e) = field_error(errors, "registry_type") { p.field-error { (e) } }
            }
            button.secondary type="submit" { "Show fields" }
        }
        h2 data-type-title { (kind.profile.label) }
        p.hint data-type-description { (kind.profile.description) }
        (error_summary(errors))
        form method="post" action="/registries" data-registry-form {
            (csrf_field(v))
            input type="hidden" name="registry_type" value=(kind.key());
            @for name in FORM_FIELDS {
                @if name == FORM_FIELDS[3] {
                    @for p in PROFILES.iter().filter(|p| !p.credential_choices.is_empty()) {
                        (kind_select(p, &form.credential_kind, p.key == kind.key(), errors))
                    }
                }
                (profile_field(name, kind, form, errors))
            }
            (field("repositories", "Repositories to scan", &form.repositories, FieldAttrs {
                multiline: true,
                hint: Some("Only for a registry without a usable catalog (Docker Hub, GitHub, ECR without the permission): one repository a line, e.g. library/postgres."),
                ..Default::default()
            }))
            (field("visibility", "Visible to teams", &form.visibility, FieldAttrs { hint: Some("Comma-separated team names; empty: everyone."), ..Default::default() }))
            (field("scan_interval", "Scan interval (seconds)", &form.scan_interval, FieldAttrs { kind: "number", hint: Some("60 to 604800; empty: the scanner's default."), ..Default::default() }))
            (field("proxy_url", "Proxy", &form.proxy_url, FieldAttrs { hint: Some("http://host:port (or https://): this registry's requests go through it (checked by the network guard). Empty: the scanner's proxy environment decides."), ..Default::default() }))
            (field("no_proxy", "Reached without the proxy", &form.no_proxy, FieldAttrs { hint: Some("Comma-separated hosts, .domains, IP addresses or CIDRs (at most 32)."), ..Default::default() }))
            div data-field="insecure" data-types=(insecure_types) hidden[!insecure_on] {
                (checkbox_with("insecure", "Plain HTTP (no TLS)", insecure_on && checked(&form.insecure), None, !insecure_on))
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
    let kind = kind_by_key(&key).unwrap_or_else(first_kind);
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
            first_kind(),
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
    let credentials = match form.credentials(kind) {
        Ok(c) => c,
        Err(e) => return add_page(&v, StatusCode::UNPROCESSABLE_ENTITY, kind, &form, &[e]),
    };
    let some = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let req = RegisterRequest {
        label: Some(form.label.clone()),
        url: some(&form.url),
        namespace: kind
            .profile
            .field("namespace")
            .and_then(|_| some(&form.namespace)),
        registry_type: kind.registry_type(),
        insecure: kind.profile.defaults.insecure_allowed && checked(&form.insecure),
        ca_pem: None,
        visibility: RegistryForm::lines(&form.visibility, &[',', '\n']),
        credentials,
        scan_interval_secs,
        repositories: RegistryForm::lines(&form.repositories, &['\n', ',']),
        auth_hosts: vec![],
        report_pulls: false,
        proxy_url: some(&form.proxy_url),
        no_proxy: RegistryForm::lines(&form.no_proxy, &[',', '\n', ' ']),
        artifact_registry: kind
            .profile
            .field("artifact_registry")
            .and_then(|_| some(&form.artifact_registry)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_profiles() {
        assert_eq!(KINDS.len(), PROFILES.len());
        for (k, p) in KINDS.iter().zip(PROFILES.iter()) {
            assert_eq!(k.profile.key, p.key);
            assert_eq!(
                std::mem::discriminant(&k.creds),
                std::mem::discriminant(&creds_of(p.registry_type)),
                "{}",
                p.key
            );
        }
        for p in PROFILES.iter() {
            for f in p.fields {
                assert!(FORM_FIELDS.contains(&f.name), "{}: {}", p.key, f.name);
            }
        }
    }
}
