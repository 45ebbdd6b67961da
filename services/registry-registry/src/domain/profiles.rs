//! What a registering user is asked for, per registry type: the one description the API
//! (`GET /v1/registry-types`, the default URL of `POST /v1/registries`), the CLI
//! (`imagelib registry types`) and the console's Add Registry form all read, so the three
//! never disagree on a label, a default or which credentials a type takes.
//!
//! The fields follow seed 004 (a platform team's registration form: Docker Registry,
//! Docker Hub, GitHub), extended to the types imagelib also speaks (Harbor, ECR, ACR,
//! Artifact Registry). Each field names where its value goes in the request
//! (`pointer`, a JSON pointer into `POST /v1/registries`).

use imagelib_events::model::RegistryType;
use serde::Serialize;

/// One input of the registration form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Field {
    /// The form field's name (`username`, `password`, …).
    pub name: &'static str,
    /// Where the value goes in `POST /v1/registries` (a JSON pointer).
    pub pointer: &'static str,
    pub label: &'static str,
    /// `text`, `password` (a secret: never shown back) or `textarea` (a secret too).
    pub input: &'static str,
    pub required: bool,
    pub help: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<&'static str>,
    /// The value filled in for the user, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<&'static str>,
    /// The credential kind this field belongs to (absent: not a credential).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_kind: Option<&'static str>,
    /// Every credential kind that reads this field, when more than `credential_kind`
    /// (an AWS region serves the access key and the pod's IAM role alike).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub credential_kinds: &'static [&'static str],
}

impl Field {
    /// Whether the credential kind `kind` reads this field.
    pub fn is_for(&self, kind: &str) -> bool {
        self.credential_kind == Some(kind) || self.credential_kinds.contains(&kind)
    }
}

/// A credential kind a registering user can pick for a type, as the form words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CredentialChoice {
    /// `credentials.kind` (`aws_web_identity`).
    pub kind: &'static str,
    pub label: &'static str,
}

/// The settings a type starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Defaults {
    /// The address used when `url` is left out (`null`: the type has no single address).
    pub url: Option<&'static str>,
    /// The credential kind the form starts with.
    pub credential_kind: &'static str,
    /// Whether the type may be reached over plain HTTP (`insecure`) at all.
    pub insecure_allowed: bool,
    /// Token hosts besides the registry's own that receive its credentials without being
    /// listed in `auth_hosts` (built in).
    pub token_hosts: &'static [&'static str],
    /// How its repositories are found when `_catalog` is missing or refused.
    pub listing: &'static str,
}

/// A registry type as a registering user sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Profile {
    #[schema(value_type = String)]
    pub registry_type: RegistryType,
    /// `registry_type` as the API spells it (`dockerhub`).
    pub key: &'static str,
    /// What the form calls it (`Docker Hub`).
    pub label: &'static str,
    pub description: &'static str,
    /// The address's shape, with `<placeholders>` (`<name>.azurecr.io`).
    pub url_placeholder: &'static str,
    /// The credential kinds this type accepts (`none`, `basic`, …).
    pub credential_kinds: &'static [&'static str],
    /// The kinds the form lets a user choose between, first the default (empty: the
    /// type's fields are one kind, `basic`, and leaving them empty is anonymous access).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub credential_choices: &'static [CredentialChoice],
    pub defaults: Defaults,
    /// The form's fields, in order.
    pub fields: &'static [Field],
}

impl Profile {
    /// Whether `url` may be left out (the type has one address).
    pub fn url_optional(&self) -> bool {
        self.defaults.url.is_some()
    }

    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

const fn field(name: &'static str, pointer: &'static str, label: &'static str) -> Field {
    Field {
        name,
        pointer,
        label,
        input: "text",
        required: false,
        help: "",
        placeholder: None,
        default: None,
        credential_kind: None,
        credential_kinds: &[],
    }
}

impl Field {
    const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    const fn help(mut self, help: &'static str) -> Self {
        self.help = help;
        self
    }
    const fn placeholder(mut self, p: &'static str) -> Self {
        self.placeholder = Some(p);
        self
    }
    const fn default(mut self, d: &'static str) -> Self {
        self.default = Some(d);
        self
    }
    const fn secret(mut self) -> Self {
        self.input = "password";
        self
    }
    const fn of(mut self, kind: &'static str) -> Self {
        self.credential_kind = Some(kind);
        self
    }
    /// A field several kinds read; the first is its `credential_kind`.
    const fn of_kinds(mut self, kinds: &'static [&'static str]) -> Self {
        self.credential_kind = Some(kinds[0]);
        self.credential_kinds = kinds;
        self
    }
    const fn multiline(mut self) -> Self {
        self.input = "textarea";
        self
    }
}

const NAME: Field = field("label", "/label", "Name")
    .required()
    .help("Display name for this registry within imagelib.");

const fn url(help: &'static str, placeholder: &'static str) -> Field {
    field("url", "/url", "Registry URL")
        .required()
        .help(help)
        .placeholder(placeholder)
}

const fn username(label: &'static str, help: &'static str) -> Field {
    field("username", "/credentials/username", label)
        .help(help)
        .of("basic")
}

const fn password(label: &'static str, help: &'static str) -> Field {
    field("password", "/credentials/password", label)
        .help(help)
        .secret()
        .of("basic")
}

const GENERIC: Profile = Profile {
    registry_type: RegistryType::Generic,
    key: "generic",
    label: "Docker Registry",
    description: "Any self-hosted registry, or one that speaks the Docker Registry HTTP API \
                  (distribution, Nexus, Artifactory, Quay, GitLab).",
    url_placeholder: "registry.example.com[:port][/namespace]",
    credential_kinds: &["none", "basic", "token"],
    credential_choices: &[],
    defaults: Defaults {
        url: None,
        credential_kind: "basic",
        insecure_allowed: true,
        token_hosts: &[],
        listing: "_catalog, or the repositories you list",
    },
    fields: &[
        NAME,
        url(
            "Full URL of the registry, including any namespace (e.g. registry.example.com:5000/team).",
            "registry.example.com/namespace",
        ),
        username(
            "Username",
            "Registry username; leave username and password empty for anonymous reads.",
        ),
        password("Password / Token", "Registry password or access token."),
    ],
};

const DOCKERHUB: Profile = Profile {
    registry_type: RegistryType::Dockerhub,
    key: "dockerhub",
    label: "Docker Hub",
    description: "Docker Hub (docker.io); a namespace's repositories are listed through the Hub API.",
    url_placeholder: "registry-1.docker.io",
    credential_kinds: &["none", "basic"],
    credential_choices: &[],
    defaults: Defaults {
        url: Some("registry-1.docker.io"),
        credential_kind: "basic",
        insecure_allowed: false,
        token_hosts: &["auth.docker.io"],
        listing: "the Hub API (hub.docker.com) for the namespace, or the repositories you list",
    },
    fields: &[
        NAME,
        field("url", "/url", "Registry URL")
            .help("Docker Hub's registry API; change it only for a mirror.")
            .default("registry-1.docker.io"),
        field("namespace", "/namespace", "Namespace")
            .help("The Docker Hub user or organisation whose repositories are scanned (e.g. bitnami).")
            .placeholder("acme"),
        username("Docker Hub Username", "Your Docker Hub username."),
        password(
            "Access Token",
            "A Docker Hub access token with read access to the relevant images.",
        ),
    ],
};

const GHCR: Profile = Profile {
    registry_type: RegistryType::Ghcr,
    key: "ghcr",
    label: "GitHub",
    description: "GitHub Container Registry (ghcr.io); an owner's container packages are \
                  listed through the GitHub REST API.",
    url_placeholder: "ghcr.io/<owner>",
    credential_kinds: &["none", "basic", "token", "github_app"],
    credential_choices: &[
        CredentialChoice {
            kind: "basic",
            label: "Username and personal access token",
        },
        CredentialChoice {
            kind: "github_app",
            label: "GitHub App, installation tokens renewed",
        },
    ],
    defaults: Defaults {
        url: Some("ghcr.io"),
        credential_kind: "basic",
        insecure_allowed: false,
        token_hosts: &[],
        listing: "the GitHub REST API for the owner's container packages, or the repositories you list",
    },
    fields: &[
        NAME,
        field("url", "/url", "Registry URL")
            .help("GitHub Container Registry's address.")
            .default("ghcr.io"),
        field("namespace", "/namespace", "Owner")
            .help("The GitHub user or organisation whose container packages are scanned.")
            .placeholder("acme"),
        username("GitHub Username", "Your GitHub username."),
        password(
            "Personal Access Token",
            "A GitHub personal access token with the read:packages scope.",
        ),
        field("app_id", "/credentials/app_id", "App ID")
            .required()
            .help("The GitHub App's App ID (the app's settings page, General → About).")
            .placeholder("123456")
            .of("github_app"),
        field("installation_id", "/credentials/installation_id", "Installation ID")
            .required()
            .help("The installation on the owner: the number at the end of the installation's URL (…/settings/installations/<id>).")
            .placeholder("7890")
            .of("github_app"),
        field("private_key", "/credentials/private_key", "Private key (PEM)")
            .required()
            .help("A private key of the app (its settings → Private keys → Generate), the .pem file's content; the app needs the Packages: read permission. imagelib exchanges it for one-hour installation tokens and renews them.")
            .secret()
            .multiline()
            .of("github_app"),
    ],
};

const HARBOR: Profile = Profile {
    registry_type: RegistryType::Harbor,
    key: "harbor",
    label: "Harbor",
    description: "A Harbor registry, or one project of it; robot accounts recommended.",
    url_placeholder: "harbor.example/<project>",
    credential_kinds: &["none", "basic"],
    credential_choices: &[],
    defaults: Defaults {
        url: None,
        credential_kind: "basic",
        insecure_allowed: true,
        token_hosts: &[],
        listing: "_catalog, else Harbor's projects API with the robot's permissions",
    },
    fields: &[
        NAME,
        url(
            "host[:port][/project], e.g. harbor.example.com/ai (a project scans only that project).",
            "harbor.example/project",
        ),
        username("Robot account", "robot$<project>+<name> or robot$<name>."),
        password("Robot secret", "The robot account's secret."),
    ],
};

const ECR: Profile = Profile {
    registry_type: RegistryType::Ecr,
    key: "ecr",
    label: "Amazon ECR",
    description: "Amazon Elastic Container Registry; an AWS access key is exchanged for \
                  12-hour registry tokens.",
    url_placeholder: "<account>.dkr.ecr.<region>.amazonaws.com",
    credential_kinds: &["aws_ecr", "aws_web_identity", "basic", "none"],
    credential_choices: &[
        CredentialChoice {
            kind: "aws_ecr",
            label: "AWS access key",
        },
        CredentialChoice {
            kind: "aws_web_identity",
            label: "IAM role of the pod (IRSA or EKS Pod Identity), no key stored",
        },
    ],
    defaults: Defaults {
        url: None,
        credential_kind: "aws_ecr",
        insecure_allowed: false,
        token_hosts: &[],
        listing: "_catalog (ecr:DescribeRepositories), or the repositories you list",
    },
    fields: &[
        NAME,
        url(
            "aws_account_id.dkr.ecr.region.amazonaws.com, optionally with a namespace.",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
        ),
        field(
            "access_key_id",
            "/credentials/access_key_id",
            "AWS access key ID",
        )
        .help("Exchanged for 12-hour ECR tokens; leave the key fields empty for anonymous access.")
        .of("aws_ecr"),
        field(
            "secret_access_key",
            "/credentials/secret_access_key",
            "AWS secret access key",
        )
        .secret()
        .of("aws_ecr"),
        field("region", "/credentials/region", "AWS region")
            .help("The registry's region, e.g. eu-west-1.")
            .placeholder("eu-west-1")
            .of_kinds(&["aws_ecr", "aws_web_identity"]),
        field(
            "session_token",
            "/credentials/session_token",
            "Session token (optional)",
        )
        .help("Only for temporary credentials.")
        .secret()
        .of("aws_ecr"),
        field("role_arn", "/credentials/role_arn", "IAM role ARN (optional)")
            .help("The role to assume with the pod's web identity token; empty: the pod's AWS_ROLE_ARN (IRSA) or its EKS Pod Identity association.")
            .placeholder("arn:aws:iam::123456789012:role/imagelib")
            .of("aws_web_identity"),
    ],
};

const ACR: Profile = Profile {
    registry_type: RegistryType::Acr,
    key: "acr",
    label: "Azure Container Registry",
    description: "Azure Container Registry; a service principal is exchanged at the registry \
                  for refresh tokens, or the admin user is used.",
    url_placeholder: "<name>.azurecr.io",
    credential_kinds: &[
        "azure_service_principal",
        "azure_workload_identity",
        "basic",
        "token",
        "none",
    ],
    credential_choices: &[
        CredentialChoice {
            kind: "azure_service_principal",
            label: "Service principal",
        },
        CredentialChoice {
            kind: "basic",
            label: "Admin user",
        },
        CredentialChoice {
            kind: "azure_workload_identity",
            label: "Workload identity of the pod, no secret stored",
        },
    ],
    defaults: Defaults {
        url: None,
        credential_kind: "azure_service_principal",
        insecure_allowed: false,
        token_hosts: &[],
        listing: "_catalog (the AcrPull role or better), or the repositories you list",
    },
    fields: &[
        NAME,
        url("myregistry.azurecr.io", "myregistry.azurecr.io"),
        field("tenant_id", "/credentials/tenant_id", "Tenant ID")
            .help("The Azure AD tenant of the service principal (for workload identity: empty takes the pod's AZURE_TENANT_ID).")
            .of_kinds(&["azure_service_principal", "azure_workload_identity"]),
        field("client_id", "/credentials/client_id", "Client ID")
            .help("The application (client) id (for workload identity: empty takes the pod's AZURE_CLIENT_ID).")
            .of_kinds(&["azure_service_principal", "azure_workload_identity"]),
        field(
            "client_secret",
            "/credentials/client_secret",
            "Client secret",
        )
        .help("The service principal's secret.")
        .secret()
        .of("azure_service_principal"),
        username("Admin username", "Or the registry's admin user."),
        password("Admin password", "The admin user's password."),
    ],
};

const GCR: Profile = Profile {
    registry_type: RegistryType::Gcr,
    key: "gcr",
    label: "Google Artifact Registry",
    description: "Google Artifact Registry (and the older gcr.io) with a service account key \
                  or an access token.",
    url_placeholder: "<location>-docker.pkg.dev/<project>/<repo>",
    credential_kinds: &[
        "basic",
        "gcp_service_account",
        "gcp_workload_identity",
        "token",
        "none",
    ],
    credential_choices: &[
        CredentialChoice {
            kind: "basic",
            label: "Username and key JSON or access token",
        },
        CredentialChoice {
            kind: "gcp_service_account",
            label: "Service account key, exchanged for access tokens",
        },
        CredentialChoice {
            kind: "gcp_workload_identity",
            label: "GKE workload identity, no key stored",
        },
    ],
    defaults: Defaults {
        url: None,
        credential_kind: "basic",
        insecure_allowed: false,
        token_hosts: &[],
        listing: "_catalog, else the Artifact Registry API",
    },
    fields: &[
        NAME,
        url(
            "LOCATION-docker.pkg.dev/PROJECT[/REPOSITORY] (or gcr.io/PROJECT).",
            "europe-west1-docker.pkg.dev/project/repo",
        ),
        username(
            "Username",
            "_json_key with a service account key, or oauth2accesstoken with an access token.",
        )
        .default("_json_key"),
        password(
            "Key JSON / access token",
            "The service account key (JSON) with roles/artifactregistry.reader, or an access token.",
        ),
        field("key_json", "/credentials/key_json", "Service account key (JSON)")
            .help("The key as downloaded (IAM → Service accounts → Keys → Add key → JSON); imagelib exchanges it for one-hour access tokens and renews them.")
            .secret()
            .multiline()
            .of("gcp_service_account"),
        field(
            "artifact_registry",
            "/artifact_registry",
            "Artifact Registry repository",
        )
        .help("Optional. The repository's resource name (gcloud artifacts repositories describe), listed through the Artifact Registry API when _catalog is refused. Needed when the URL is a mirror, private endpoint or proxy host instead of LOCATION-docker.pkg.dev/PROJECT/REPOSITORY; with such a URL leave it empty.")
        .placeholder("projects/PROJECT/locations/LOCATION/repositories/REPOSITORY"),
    ],
};

/// Every type, in the order the form lists them.
pub static PROFILES: [Profile; 7] = [GENERIC, DOCKERHUB, GHCR, HARBOR, ECR, ACR, GCR];

pub fn profile(t: RegistryType) -> &'static Profile {
    PROFILES
        .iter()
        .find(|p| p.registry_type == t)
        .unwrap_or(&PROFILES[0])
}

pub fn by_key(key: &str) -> Option<&'static Profile> {
    PROFILES.iter().find(|p| p.key == key)
}

/// The address a registration goes to: `url` as given, or the type's default; with a
/// `namespace` appended. A type without a default needs `url`.
pub fn registration_url(
    t: RegistryType,
    url: Option<&str>,
    namespace: Option<&str>,
) -> Result<String, super::registry::FieldError> {
    let p = profile(t);
    let base = match url.map(str::trim).filter(|u| !u.is_empty()) {
        Some(u) => u.to_owned(),
        None => match p.defaults.url {
            Some(d) => d.to_owned(),
            None => {
                return Err(super::registry::field(
                    "/url",
                    format!(
                        "required for registry_type `{}` ({}), e.g. {}",
                        p.key, p.label, p.url_placeholder
                    ),
                ));
            }
        },
    };
    match namespace
        .map(|n| n.trim().trim_matches('/'))
        .filter(|n| !n.is_empty())
    {
        None => Ok(base),
        Some(ns) => {
            if ns.len() > 255 {
                return Err(super::registry::field(
                    "/namespace",
                    "at most 255 characters",
                ));
            }
            if ns.parse::<imagelib_events::RepositoryName>().is_err() {
                return Err(super::registry::field(
                    "/namespace",
                    "a user, organisation or project name (lower-case letters, digits, `-`, `_`, `.`)",
                ));
            }
            Ok(format!("{}/{ns}", base.trim_end_matches('/')))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_one_profile() {
        for t in [
            RegistryType::Generic,
            RegistryType::Harbor,
            RegistryType::Dockerhub,
            RegistryType::Ghcr,
            RegistryType::Ecr,
            RegistryType::Acr,
            RegistryType::Gcr,
        ] {
            let p = profile(t);
            assert_eq!(p.registry_type, t);
            assert_eq!(
                serde_json::to_value(t).unwrap().as_str(),
                Some(p.key),
                "the key is the API's spelling"
            );
            assert_eq!(p.fields[0].name, "label");
            assert!(p.field("url").is_some(), "{}", p.key);
            assert!(
                p.credential_kinds.contains(&p.defaults.credential_kind),
                "{}",
                p.key
            );
            for f in p.fields {
                for k in f.credential_kind.iter().chain(f.credential_kinds) {
                    assert!(p.credential_kinds.contains(k), "{}: {}", p.key, f.name);
                }
            }
            for c in p.credential_choices {
                assert!(
                    p.credential_kinds.contains(&c.kind),
                    "{}: {}",
                    p.key,
                    c.kind
                );
            }
            if let Some(first) = p.credential_choices.first() {
                assert_eq!(first.kind, p.defaults.credential_kind, "{}", p.key);
            }
        }
    }

    #[test]
    fn seed_004_fields() {
        let labels = |t| {
            profile(t)
                .fields
                .iter()
                .map(|f| f.label)
                .collect::<Vec<_>>()
        };
        let generic = labels(RegistryType::Generic);
        for l in ["Name", "Registry URL", "Username", "Password / Token"] {
            assert!(generic.contains(&l), "{l}");
        }
        let hub = labels(RegistryType::Dockerhub);
        for l in ["Name", "Docker Hub Username", "Access Token"] {
            assert!(hub.contains(&l), "{l}");
        }
        let gh = labels(RegistryType::Ghcr);
        for l in ["Name", "GitHub Username", "Personal Access Token"] {
            assert!(gh.contains(&l), "{l}");
        }
        assert!(
            profile(RegistryType::Ghcr)
                .field("password")
                .unwrap()
                .help
                .contains("read:packages")
        );
    }

    #[test]
    fn default_urls() {
        assert_eq!(
            registration_url(RegistryType::Dockerhub, None, None).unwrap(),
            "registry-1.docker.io"
        );
        assert_eq!(
            registration_url(RegistryType::Dockerhub, Some(" "), Some("bitnami")).unwrap(),
            "registry-1.docker.io/bitnami"
        );
        assert_eq!(
            registration_url(RegistryType::Ghcr, None, Some("acme")).unwrap(),
            "ghcr.io/acme"
        );
        assert_eq!(
            registration_url(RegistryType::Harbor, Some("harbor.example/"), Some("ai")).unwrap(),
            "harbor.example/ai"
        );
        for t in [
            RegistryType::Generic,
            RegistryType::Harbor,
            RegistryType::Ecr,
            RegistryType::Acr,
            RegistryType::Gcr,
        ] {
            let e = registration_url(t, None, None).unwrap_err();
            assert_eq!(e.pointer, "/url");
            assert!(e.message.contains("required"), "{}", e.message);
        }
        assert_eq!(
            registration_url(RegistryType::Dockerhub, None, Some("Bad Name"))
                .unwrap_err()
                .pointer,
            "/namespace"
        );
    }
}
