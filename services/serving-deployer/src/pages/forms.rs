//! The forms that create deployments: a KServe model deployment (`/deployments/new`) and a
//! CloudNativePG cluster (`/provisioning/postgres/new`). Both build the API's
//! [`DeployRequest`] and hand it to [`Deployer::deploy`]; its refusals come back at the
//! field they name, or as an alert (a trust policy's reasons, a mutated tag).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use imagelib_console::layout::{
    FieldAttrs, csrf_field, digest, error_page, field_error, text_field,
};
use imagelib_console::{CsrfForm, Markup, Nav, Viewer, html, page_with_status};
use imagelib_events::event::DeploymentRequested;
use imagelib_events::model::{DeploymentTarget, ImageKind, ImageRef, WorkloadKind};
use imagelib_platform::Problem;
use imagelib_platform::auth::Role;
use serde::Deserialize;
use serde_json::Value;

use crate::app::{
    CommandError, DeployRequest, Deployer, MutationRefusal, PolicyRefusal, reason_words,
};

/// Which form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Model,
    Postgres,
}

impl Kind {
    fn workload(self) -> WorkloadKind {
        match self {
            Kind::Model => WorkloadKind::InferenceService,
            Kind::Postgres => WorkloadKind::PostgresCluster,
        }
    }

    fn action(self) -> &'static str {
        match self {
            Kind::Model => "/deployments",
            Kind::Postgres => "/provisioning/postgres",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::Model => "Deploy a model",
            Kind::Postgres => "Provision PostgreSQL",
        }
    }

    fn submit(self) -> &'static str {
        match self {
            Kind::Model => "Deploy",
            Kind::Postgres => "Provision",
        }
    }

    /// The field the request's `replicas` comes from.
    fn replicas_field(self) -> &'static str {
        match self {
            Kind::Model => "replicas",
            Kind::Postgres => "instances",
        }
    }

    fn image_kind(self) -> ImageKind {
        match self {
            Kind::Model => ImageKind::Model,
            Kind::Postgres => ImageKind::Database,
        }
    }
}

/// Both forms' fields, as typed (every one text, so a bad number comes back at its field).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub(super) struct DeployForm {
    image: String,
    name: String,
    namespace: String,
    replicas: String,
    instances: String,
    cpu_request: String,
    cpu_limit: String,
    memory_request: String,
    memory_limit: String,
    gpu_request: String,
    gpu_limit: String,
    /// `KEY=value` lines.
    env: String,
    target: String,
    storage: String,
    storage_class: String,
    /// `name=value` lines (postgresql.conf).
    parameters: String,
    /// Comma- or space-separated.
    shared_preload_libraries: String,
}

/// Field errors: `(field, message)`.
type Errors = Vec<(String, String)>;

/// A refusal that belongs to no single field.
#[derive(Debug)]
enum Alert {
    Text(String),
    Policy(Box<PolicyRefusal>),
    Mutation(Box<MutationRefusal>),
}

const GPU: &str = "nvidia.com/gpu";

/// The resource fields: (field, section, resource name).
const RESOURCES: &[(&str, bool, &str)] = &[
    ("cpu_request", true, "cpu"),
    ("cpu_limit", false, "cpu"),
    ("memory_request", true, "memory"),
    ("memory_limit", false, "memory"),
    ("gpu_request", true, GPU),
    ("gpu_limit", false, GPU),
];

impl DeployForm {
    fn field(&self, name: &str) -> &str {
        match name {
            "cpu_request" => &self.cpu_request,
            "cpu_limit" => &self.cpu_limit,
            "memory_request" => &self.memory_request,
            "memory_limit" => &self.memory_limit,
            "gpu_request" => &self.gpu_request,
            "gpu_limit" => &self.gpu_limit,
            _ => "",
        }
    }

    /// The API's request, or the fields that cannot become one.
    fn request(&self, kind: Kind) -> Result<DeployRequest, Errors> {
        let mut errors = Errors::new();
        let replicas_field = kind.replicas_field();
        let raw = match kind {
            Kind::Model => &self.replicas,
            Kind::Postgres => &self.instances,
        };
        let replicas = match raw.trim() {
            "" => 1,
            s => s.parse::<u32>().unwrap_or_else(|_| {
                errors.push((replicas_field.into(), "a whole number, 0 to 100".into()));
                1
            }),
        };
        let mut resources = imagelib_events::model::Resources::default();
        for (field, request, name) in RESOURCES {
            if *name == GPU && kind != Kind::Model {
                continue;
            }
            let text = self.field(field).trim();
            if text.is_empty() {
                continue;
            }
            let value = if *name == GPU {
                match text.parse::<u64>() {
                    Ok(n) => Value::from(n),
                    Err(_) => {
                        errors.push(((*field).into(), "a whole number of GPUs".into()));
                        continue;
                    }
                }
            } else {
                Value::String(text.to_owned())
            };
            let section = if *request {
                &mut resources.requests
            } else {
                &mut resources.limits
            };
            section.insert((*name).to_owned(), value);
        }
        let env = match kind {
            Kind::Model => pairs(&self.env, "env", "KEY=value", &mut errors),
            Kind::Postgres => BTreeMap::new(),
        };
        let target = match self.target.trim() {
            "" => None,
            t => match serde_json::from_value::<DeploymentTarget>(Value::String(t.to_owned())) {
                Ok(t) => Some(t),
                Err(_) => {
                    errors.push(("target".into(), "`gitops` or `kubernetes`".into()));
                    None
                }
            },
        };
        let mut options = serde_json::Map::new();
        if kind == Kind::Postgres {
            if !self.storage.trim().is_empty() {
                options.insert("storage".into(), Value::from(self.storage.trim()));
            }
            if !self.storage_class.trim().is_empty() {
                options.insert(
                    "storage_class".into(),
                    Value::from(self.storage_class.trim()),
                );
            }
            let params = pairs(&self.parameters, "parameters", "name=value", &mut errors);
            if !params.is_empty() {
                options.insert(
                    "parameters".into(),
                    Value::Object(
                        params
                            .into_iter()
                            .map(|(k, v)| (k, Value::String(v.trim().to_owned())))
                            .collect(),
                    ),
                );
            }
            let libs: Vec<Value> = self
                .shared_preload_libraries
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(Value::from)
                .collect();
            if !libs.is_empty() {
                options.insert("shared_preload_libraries".into(), Value::Array(libs));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(DeployRequest {
            image: self.image.trim().to_owned(),
            name: self.name.trim().to_owned(),
            namespace: self.namespace.trim().to_owned(),
            replicas,
            resources,
            env,
            target,
            options,
        })
    }
}

/// `KEY=value` lines; blank lines and `#` comments skipped; each bad line an error at `field`.
fn pairs(text: &str, field: &str, shape: &str, errors: &mut Errors) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                if out.insert(k.trim().to_owned(), v.to_owned()).is_some() {
                    errors.push((
                        field.into(),
                        format!("line {}: `{}` is given twice", i + 1, k.trim()),
                    ));
                }
            }
            _ => errors.push((field.into(), format!("line {}: expected {shape}", i + 1))),
        }
    }
    out
}

/// The form field an API error pointer (`/name`, `/env/KEY`, `/resources/limits/cpu`) is
/// about, if the form has one.
fn field_of(kind: Kind, pointer: &str) -> Option<String> {
    let p = pointer.trim_start_matches('/');
    let field = match p.split('/').next().unwrap_or_default() {
        "image" | "name" | "namespace" | "target" => p.split('/').next().unwrap_or_default(),
        "replicas" => kind.replicas_field(),
        "env" if kind == Kind::Model => "env",
        "resources" => {
            let mut parts = p.splitn(3, '/').skip(1);
            let section = parts.next()?;
            let name = parts.next()?;
            RESOURCES
                .iter()
                .find(|(_, request, n)| *n == name && *request == (section == "requests"))
                .map(|(f, _, _)| *f)?
        }
        _ => return None,
    };
    Some(field.to_owned())
}

/// How a refused deploy is shown: the status, errors at fields, or an alert.
fn refusal(kind: Kind, e: CommandError) -> (StatusCode, Errors, Option<Alert>) {
    let status =
        |p: &Problem| StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match e {
        CommandError::PolicyViolation(r) => (StatusCode::FORBIDDEN, vec![], Some(Alert::Policy(r))),
        CommandError::TagMutated(r) => (StatusCode::CONFLICT, vec![], Some(Alert::Mutation(r))),
        CommandError::Invalid { pointer, message } => match field_of(kind, &pointer) {
            Some(f) => (StatusCode::UNPROCESSABLE_ENTITY, vec![(f, message)], None),
            None => (
                StatusCode::UNPROCESSABLE_ENTITY,
                vec![],
                Some(Alert::Text(format!("{pointer}: {message}"))),
            ),
        },
        // About the image: not in the catalog, the wrong kind, its registry removed, not
        // approved.
        e @ (CommandError::NotFound(_) | CommandError::Refused(_) | CommandError::Forbidden(_)) => {
            let p = Problem::from(e);
            (
                status(&p),
                vec![("image".into(), p.detail.clone().unwrap_or_default())],
                None,
            )
        }
        e => {
            let p = Problem::from(e);
            (
                status(&p),
                vec![],
                Some(Alert::Text(
                    p.detail.clone().unwrap_or_else(|| p.title.clone()),
                )),
            )
        }
    }
}

pub(super) async fn new_model(
    State(app): State<Arc<Deployer>>,
    v: Viewer,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    new_form(&app, v, q, Kind::Model).await
}

pub(super) async fn new_postgres(
    State(app): State<Arc<Deployer>>,
    v: Viewer,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    new_form(&app, v, q, Kind::Postgres).await
}

/// A Kubernetes name suggested from a repository: its last component, lower-cased, other
/// characters turned into `-`.
fn suggested_name(image: &str) -> String {
    let reference = image.split('@').next().unwrap_or_default();
    let Ok(r) = reference.parse::<ImageRef>() else {
        return String::new();
    };
    let mut name: String = r
        .repository
        .short_name()
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    name.truncate(63);
    name.trim_matches('-').to_owned()
}

async fn new_form(app: &Deployer, v: Viewer, q: HashMap<String, String>, kind: Kind) -> Response {
    if let Err(res) = v.require(Role::Deployer) {
        return res;
    }
    // `?from=<deployment id>`: the form filled with that deployment's spec, to change it.
    if let Some(from) = q.get("from").filter(|f| !f.is_empty()) {
        let row = match from.parse() {
            Ok(id) => app.store().deployment(id).await,
            Err(_) => Ok(None),
        };
        let row = match row {
            Ok(Some(row)) if row.request.workload == kind.workload() => row,
            Ok(_) => {
                return error_page(
                    &v,
                    StatusCode::NOT_FOUND,
                    "Not found",
                    "There is no such deployment of this kind to start from.",
                );
            }
            Err(e) => return super::deployments::problem_page(&v, e.into()),
        };
        if let Err(e) = app.visible(&v.caller, &row).await {
            return super::deployments::problem_page(&v, e);
        }
        let form = DeployForm::from_request(&row.request);
        return render(app, &v, kind, &form, StatusCode::OK, &[], None).await;
    }
    let image = q.get("image").cloned().unwrap_or_default();
    let form = DeployForm {
        name: suggested_name(&image),
        image,
        ..Default::default()
    };
    render(app, &v, kind, &form, StatusCode::OK, &[], None).await
}

impl DeployForm {
    /// The form that asks for `req` again (its tag, not its digest: a submit resolves the
    /// tag as the API does).
    fn from_request(req: &DeploymentRequested) -> DeployForm {
        let text = |v: Option<&Value>| match v {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let (requests, limits) = (&req.resources.requests, &req.resources.limits);
        let opt = |k: &str| {
            req.options
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let lines = |m: &mut dyn Iterator<Item = (String, String)>| {
            m.map(|(k, v)| format!("{k}={v}\n")).collect::<String>()
        };
        let replicas = req.replicas.to_string();
        DeployForm {
            image: req.image.to_string(),
            name: req.name.to_string(),
            namespace: req.namespace.to_string(),
            instances: replicas.clone(),
            replicas,
            cpu_request: text(requests.get("cpu")),
            cpu_limit: text(limits.get("cpu")),
            memory_request: text(requests.get("memory")),
            memory_limit: text(limits.get("memory")),
            gpu_request: text(requests.get(GPU)),
            gpu_limit: text(limits.get(GPU)),
            env: lines(&mut req.env.iter().map(|(k, v)| (k.clone(), v.clone()))),
            target: serde_json::to_value(req.target)
                .ok()
                .and_then(|t| t.as_str().map(str::to_owned))
                .unwrap_or_default(),
            storage: opt("storage").to_owned(),
            storage_class: opt("storage_class").to_owned(),
            parameters: lines(
                &mut req
                    .options
                    .get("parameters")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), text(Some(v)))),
            ),
            shared_preload_libraries: req
                .options
                .get("shared_preload_libraries")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
        }
    }
}

pub(super) async fn create_model(
    State(app): State<Arc<Deployer>>,
    f: CsrfForm<DeployForm>,
) -> Response {
    submit(&app, f.viewer, f.form, Kind::Model).await
}

pub(super) async fn create_postgres(
    State(app): State<Arc<Deployer>>,
    f: CsrfForm<DeployForm>,
) -> Response {
    submit(&app, f.viewer, f.form, Kind::Postgres).await
}

async fn submit(app: &Deployer, v: Viewer, form: DeployForm, kind: Kind) -> Response {
    if let Err(res) = v.require(Role::Deployer) {
        return res;
    }
    let req = match form.request(kind) {
        Ok(r) => r,
        Err(errors) => {
            return render(
                app,
                &v,
                kind,
                &form,
                StatusCode::UNPROCESSABLE_ENTITY,
                &errors,
                None,
            )
            .await;
        }
    };
    match app
        .deploy(&v.caller, req, kind.workload(), super::traceparent())
        .await
    {
        Ok((row, new)) => Redirect::to(&format!(
            "/deployments/{}?done={}",
            row.id,
            if new { "deployed" } else { "unchanged" }
        ))
        .into_response(),
        Err(e) => {
            let (status, errors, alert) = refusal(kind, e);
            render(app, &v, kind, &form, status, &errors, alert).await
        }
    }
}

/// What the image field resolves to now, when the viewer may see it.
async fn preview(app: &Deployer, v: &Viewer, kind: Kind, image: &str) -> Option<Markup> {
    let reference = image.split('@').next()?;
    let r: ImageRef = reference.parse().ok()?;
    let registry = app
        .store()
        .registry(r.registry_id)
        .await
        .ok()
        .flatten()
        .filter(|reg| v.caller.sees(&reg.visibility) && !reg.removed)?;
    let tag = app
        .store()
        .tag(r.registry_id, r.repository.as_str(), r.tag.as_str())
        .await
        .ok()
        .flatten()?;
    Some(html! {
        p.hint {
            code { (r.repository) ":" (r.tag) } " in " (registry.label) " is a "
            (tag.kind.as_str()) " image at " (digest(&tag.digest))
            @if tag.kind != kind.image_kind() {
                " " span.badge.warn { "not a " (kind.image_kind().as_str()) " image" }
            }
        }
    })
}

fn alert(a: &Alert) -> Markup {
    match a {
        Alert::Text(t) => html! {
            div.error role="alert" { p { "Not deployed:" } ul { li { (t) } } }
        },
        Alert::Policy(r) => html! {
            div.error role="alert" {
                p {
                    "Refused by trust policy " code { (r.policy) } " (enforce): "
                    code { (r.image) } " (" (digest(&r.digest)) ") fails it, so it was not deployed."
                }
                ul.reasons {
                    @for reason in &r.reasons {
                        li {
                            (reason_words(*reason))
                            @let seen: Vec<&str> = r.findings.iter()
                                .filter(|f| f.reason == *reason && !f.detail.is_empty())
                                .map(|f| f.detail.as_str()).collect();
                            @if !seen.is_empty() {
                                ul { @for d in seen { li { (d) } } }
                            }
                        }
                    }
                    @if r.reasons.is_empty() { li { "The verdict names no reason." } }
                }
            }
        },
        Alert::Mutation(r) => html! {
            div.error role="alert" {
                p {
                    "Tag " code { (r.tag) } " of " code { (r.registry_id) "/" (r.repository) }
                    " was re-pushed although policy calls it immutable: it pointed at "
                    (digest(&r.old_digest)) " and now points at " (digest(&r.new_digest))
                    " (found by " (r.found_by) "). The new content is not deployed until a curator approves it."
                }
                ul {
                    li { "A curator approves the new digest: " code { (r.approve_command()) } }
                    li {
                        "Or keep running the content the tag had: deploy "
                        code { (r.pin_old()) }
                        " " button.copy type="button" data-copy=(r.pin_old()) { "Copy" }
                    }
                }
            }
        },
    }
}

async fn render(
    app: &Deployer,
    v: &Viewer,
    kind: Kind,
    form: &DeployForm,
    status: StatusCode,
    errors: &[(String, String)],
    refused: Option<Alert>,
) -> Response {
    let preview = preview(app, v, kind, &form.image).await;
    let text = |name: &str, label: &str, value: &str, required: bool, hint: Option<&str>| {
        text_field(
            name,
            label,
            value,
            errors,
            FieldAttrs {
                required,
                hint,
                ..Default::default()
            },
        )
    };
    let target_error = field_error(errors, "target");
    let body = html! {
        h1 { (kind.title()) }
        @match kind {
            Kind::Model => p { "Deploys a model image as a KServe InferenceService, pinned by the digest its tag has now." }
            Kind::Postgres => p { "Provisions a CloudNativePG Cluster from a database image, pinned by the digest its tag has now." }
        }
        @if let Some(a) = &refused {
            (alert(a))
        } @else if !errors.is_empty() {
            p.error role="alert" { "Not deployed: see the fields marked below." }
        }
        form.deploy method="post" action=(kind.action()) {
            (csrf_field(v))
            (text("image", "Image", &form.image, true,
                Some("<registry-id>/<repository>:<tag> (or @sha256:… after the tag to keep a digest the tag was moved away from)")))
            @if let Some(p) = &preview { (p) }
            (text("name", "Name", &form.name, true,
                Some("A Kubernetes name: lower-case letters, digits and -, at most 63.")))
            (text("namespace", "Namespace", &form.namespace, true, None))
            @match kind {
                Kind::Model => (text_field("replicas", "Replicas", &form.replicas, errors,
                    FieldAttrs { kind: "number", hint: Some("Default 1, at most 100."), ..Default::default() })),
                Kind::Postgres => (text_field("instances", "Instances", &form.instances, errors,
                    FieldAttrs { kind: "number", hint: Some("Default 1, at most 100."), ..Default::default() })),
            }
            @if kind == Kind::Postgres {
                (text("storage", "Storage size", &form.storage, false, Some("Default 10Gi.")))
                (text("storage_class", "Storage class", &form.storage_class, false, None))
            }
            fieldset.grid {
                legend { "Resources" }
                (text("cpu_request", "CPU request", &form.cpu_request, false, Some("e.g. 2 or 500m")))
                (text("cpu_limit", "CPU limit", &form.cpu_limit, false, None))
                (text("memory_request", "Memory request", &form.memory_request, false, Some("e.g. 16Gi")))
                (text("memory_limit", "Memory limit", &form.memory_limit, false, None))
                @if kind == Kind::Model {
                    (text("gpu_request", "GPU request (nvidia.com/gpu)", &form.gpu_request, false, None))
                    (text("gpu_limit", "GPU limit (nvidia.com/gpu)", &form.gpu_limit, false, None))
                }
            }
            @match kind {
                Kind::Model => (text_field("env", "Environment", &form.env, errors, FieldAttrs {
                    multiline: true, hint: Some("One KEY=value a line."), ..Default::default() })),
                Kind::Postgres => {
                    (text_field("parameters", "PostgreSQL parameters", &form.parameters, errors, FieldAttrs {
                        multiline: true, hint: Some("One name=value a line (postgresql.conf)."), ..Default::default() }))
                    (text("shared_preload_libraries", "Shared preload libraries", &form.shared_preload_libraries, false,
                        Some("Comma-separated.")))
                }
            }
            @if app.kubernetes.is_some() || !form.target.is_empty() {
                div.field {
                    label for="f-target" { "Target" }
                    select #f-target name="target"
                        aria-invalid=[target_error.map(|_| "true")]
                        aria-describedby=[target_error.map(|_| "f-target-error")] {
                        option value="" selected[form.target.is_empty()] { "Default" }
                        option value="gitops" selected[form.target == "gitops"] { "GitOps repository" }
                        option value="kubernetes" selected[form.target == "kubernetes"] { "Kubernetes API" }
                    }
                    @if let Some(e) = target_error { p.field-error #f-target-error { (e) } }
                }
            }
            div.actions {
                button type="submit" { (kind.submit()) }
                a href="/deployments" { "Cancel" }
            }
        }
    };
    page_with_status(status, v, Nav::Deployments, kind.title(), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_pointers_land_at_their_fields() {
        assert_eq!(field_of(Kind::Model, "/name").as_deref(), Some("name"));
        assert_eq!(
            field_of(Kind::Postgres, "/replicas").as_deref(),
            Some("instances")
        );
        assert_eq!(field_of(Kind::Model, "/env/1BAD").as_deref(), Some("env"));
        assert_eq!(
            field_of(Kind::Model, "/resources/limits/nvidia.com/gpu").as_deref(),
            Some("gpu_limit")
        );
        assert_eq!(
            field_of(Kind::Model, "/resources/requests/cpu").as_deref(),
            Some("cpu_request")
        );
        assert_eq!(field_of(Kind::Model, "/resources/limits/ephemeral"), None);
        assert_eq!(field_of(Kind::Model, "/options"), None);
    }

    #[test]
    fn a_form_becomes_the_api_request() {
        let f = DeployForm {
            image: " r/acme/llm:1.0 ".into(),
            name: "llm".into(),
            namespace: "models".into(),
            replicas: "2".into(),
            cpu_request: "4".into(),
            gpu_limit: "1".into(),
            env: "LOG_LEVEL=info\r\n\n# a comment\nURL=http://x/?a=b\n".into(),
            ..Default::default()
        };
        let r = f.request(Kind::Model).unwrap();
        assert_eq!(r.image, "r/acme/llm:1.0");
        assert_eq!(r.replicas, 2);
        assert_eq!(r.resources.requests["cpu"], Value::from("4"));
        assert_eq!(r.resources.limits[GPU], Value::from(1));
        assert_eq!(r.env["URL"], "http://x/?a=b");
        assert_eq!(r.env.len(), 2);

        let bad = DeployForm {
            replicas: "two".into(),
            gpu_request: "a lot".into(),
            env: "NOEQUALS\nA=1\nA=2".into(),
            target: "mars".into(),
            ..Default::default()
        };
        let errs = bad.request(Kind::Model).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["replicas", "gpu_request", "env", "env", "target"]);

        let pg = DeployForm {
            instances: "3".into(),
            storage: "20Gi".into(),
            parameters: "max_connections = 200".into(),
            shared_preload_libraries: "pg_stat_statements, auto_explain".into(),
            gpu_limit: "ignored".into(),
            ..Default::default()
        };
        let r = pg.request(Kind::Postgres).unwrap();
        assert_eq!(r.replicas, 3);
        assert_eq!(r.options["storage"], "20Gi");
        assert_eq!(r.options["parameters"]["max_connections"], "200");
        assert_eq!(
            r.options["shared_preload_libraries"],
            serde_json::json!(["pg_stat_statements", "auto_explain"])
        );
    }

    #[test]
    fn a_name_is_suggested_from_the_repository() {
        let id = imagelib_events::RegistryId::new();
        assert_eq!(
            suggested_name(&format!("{id}/acme/llama_3.1:1.0")),
            "llama-3-1"
        );
        assert_eq!(suggested_name("not an image"), "");
    }
}
