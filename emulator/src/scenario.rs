//! The seeded description of a directory: users, groups, subscribed SKUs and the app registration
//! allowed to call the directory. Everything derived from a scenario (ids, names, memberships) is
//! deterministic for a given seed.

use serde::{Deserialize, Serialize};

/// A directory to build: one tenant. The serde form is the body of `POST /_emulator/scenario` and
/// the content of `graph-emulator --scenario FILE` (or one entry of a [`TenantSet`]). Every field
/// is optional; unknown fields are refused, named by their path (`skus[0].units`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct Scenario {
    /// Seed of every generated id, name and membership.
    pub seed: u64,
    /// Directory (tenant) id as a GUID string; derived from the seed when absent.
    pub tenant_id: Option<String>,
    /// Initial domain of the tenant, e.g. `contoso.onmicrosoft.com`.
    pub domain: String,
    /// Application (client) id of the app registration allowed to obtain tokens; derived when absent.
    pub client_id: Option<String>,
    /// Client secret of that app registration; derived when absent.
    pub client_secret: Option<String>,
    /// Number of users in the directory.
    pub users: usize,
    /// Share of users (0.0..=1.0) without a usage location.
    pub users_without_usage_location: f64,
    /// Usage location given to every other user (ISO 3166-1 alpha-2).
    pub usage_location: String,
    /// Groups, in creation order. Nested groups refer to other groups by display name.
    pub groups: Vec<GroupSpec>,
    /// Subscribed SKUs of the tenant.
    pub skus: Vec<SkuSpec>,
}

/// A security group.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct GroupSpec {
    pub display_name: String,
    /// Fixed object id (GUID string); derived from the seed when absent.
    pub id: Option<String>,
    /// Number of direct user members, drawn from the directory's users.
    pub members: usize,
    /// Display names of groups that are direct members of this group.
    pub nested_groups: Vec<String>,
    /// Number of devices that are direct members.
    pub devices: usize,
    /// Number of organisational contacts that are direct members.
    pub contacts: usize,
    /// SKUs (part number or skuId) licensed through this group: every user that is a transitive
    /// member holds them as group-inherited licenses.
    pub licenses: Vec<String>,
    /// Draw the user members from the first `members` users instead of a seeded sample.
    pub leading_users: bool,
}

/// A subscribed SKU.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct SkuSpec {
    pub sku_part_number: String,
    /// skuId (GUID string); derived from the seed when absent.
    pub sku_id: Option<String>,
    /// prepaidUnits.enabled
    pub enabled: u32,
    pub suspended: u32,
    pub warning: u32,
    pub locked_out: u32,
    /// Number of users (a seeded sample of those with a usage location) holding this SKU as a direct
    /// assignment when the scenario loads.
    pub preassigned: usize,
    pub service_plans: Vec<ServicePlanSpec>,
    /// `User` or `Company`.
    pub applies_to: String,
    /// `Enabled`, `Warning`, `Suspended`, `Deleted` or `LockedOut`.
    pub capability_status: String,
}

/// A service plan inside a SKU.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct ServicePlanSpec {
    pub service_plan_name: String,
    /// servicePlanId (GUID string); derived from the name when absent.
    pub service_plan_id: Option<String>,
    pub applies_to: String,
    pub provisioning_status: String,
    /// Names of service plans that cannot be active on the same user as this one.
    pub exclusive_with: Vec<String>,
    /// Names of service plans that must be active on the user for this one to be enabled.
    pub depends_on: Vec<String>,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            seed: 1,
            tenant_id: None,
            domain: "contoso.onmicrosoft.com".into(),
            client_id: None,
            client_secret: None,
            users: 0,
            users_without_usage_location: 0.0,
            usage_location: "US".into(),
            groups: Vec::new(),
            skus: Vec::new(),
        }
    }
}

impl Default for SkuSpec {
    fn default() -> Self {
        SkuSpec {
            sku_part_number: String::new(),
            sku_id: None,
            enabled: 0,
            suspended: 0,
            warning: 0,
            locked_out: 0,
            preassigned: 0,
            service_plans: Vec::new(),
            applies_to: "User".into(),
            capability_status: "Enabled".into(),
        }
    }
}

impl Default for ServicePlanSpec {
    fn default() -> Self {
        ServicePlanSpec {
            service_plan_name: String::new(),
            service_plan_id: None,
            applies_to: "User".into(),
            provisioning_status: "Success".into(),
            exclusive_with: Vec::new(),
            depends_on: Vec::new(),
        }
    }
}

impl ServicePlanSpec {
    pub fn new(name: &str, id: &str) -> Self {
        ServicePlanSpec {
            service_plan_name: name.into(),
            service_plan_id: Some(id.into()),
            ..Default::default()
        }
    }
}

impl GroupSpec {
    pub fn new(display_name: &str, members: usize) -> Self {
        GroupSpec {
            display_name: display_name.into(),
            members,
            ..Default::default()
        }
    }
}

/// Well-known Microsoft 365 SKU ids, so that a scenario looks like a real tenant.
pub const ENTERPRISEPACK_SKU_ID: &str = "6fd2c87f-b296-42f0-b197-1e91e994b900";
pub const SPE_E5_SKU_ID: &str = "06ebc4ee-1bb5-47dd-8120-11324bc54e06";
pub const EXCHANGESTANDARD_SKU_ID: &str = "4b9405b0-7788-4568-add1-99614e613b69";

/// The Office 365 E3 service plans (a representative subset).
fn e3_plans() -> Vec<ServicePlanSpec> {
    vec![
        ServicePlanSpec::new(
            "EXCHANGE_S_ENTERPRISE",
            "efb87545-963c-4e0d-99df-69c6916d9eb0",
        ),
        ServicePlanSpec::new(
            "SHAREPOINTENTERPRISE",
            "5dbe027f-2339-4123-9542-606e4d348a72",
        ),
        ServicePlanSpec::new("SHAREPOINTWAC", "e95bec33-7c88-4a70-8e19-b10bd9d0c014"),
        ServicePlanSpec::new("OFFICESUBSCRIPTION", "43de0ff5-c92c-492b-9116-175376d08c38"),
        ServicePlanSpec {
            depends_on: vec!["EXCHANGE_S_ENTERPRISE".into()],
            ..ServicePlanSpec::new("TEAMS1", "57ff2da0-773e-42df-b2af-ffb7a2317929")
        },
        ServicePlanSpec {
            depends_on: vec!["SHAREPOINTENTERPRISE".into()],
            ..ServicePlanSpec::new("FORMS_PLAN_E3", "2789c901-c14e-48ab-a76a-be334d9d793a")
        },
        ServicePlanSpec::new("MCOSTANDARD", "0feaeb32-d00e-4d66-bd5a-43b5b83db82c"),
    ]
}

/// The Microsoft 365 E5 service plans (a representative subset).
fn e5_plans() -> Vec<ServicePlanSpec> {
    vec![
        ServicePlanSpec::new(
            "EXCHANGE_S_ENTERPRISE",
            "efb87545-963c-4e0d-99df-69c6916d9eb0",
        ),
        ServicePlanSpec::new(
            "SHAREPOINTENTERPRISE",
            "5dbe027f-2339-4123-9542-606e4d348a72",
        ),
        ServicePlanSpec::new("OFFICESUBSCRIPTION", "43de0ff5-c92c-492b-9116-175376d08c38"),
        ServicePlanSpec {
            depends_on: vec!["EXCHANGE_S_ENTERPRISE".into()],
            ..ServicePlanSpec::new("TEAMS1", "57ff2da0-773e-42df-b2af-ffb7a2317929")
        },
        ServicePlanSpec::new("MCOEV", "4828c8ec-dc2e-4779-b502-87ac9ce28ab7"),
        ServicePlanSpec::new("ATP_ENTERPRISE", "f20fedf3-f3c3-43c3-8267-2bfdd51c0939"),
    ]
}

/// Exchange Online (Plan 1): its mailbox plan cannot be active next to the Plan 2 mailbox of E3/E5.
fn exchange_standard_plans() -> Vec<ServicePlanSpec> {
    vec![ServicePlanSpec {
        exclusive_with: vec!["EXCHANGE_S_ENTERPRISE".into()],
        ..ServicePlanSpec::new(
            "EXCHANGE_S_STANDARD",
            "9aaf7827-d63c-4b61-89c3-182f06f82e5c",
        )
    }]
}

impl Scenario {
    /// The demo tenant: groups `All Staff` (5,000 members), `Sales` (250), `Engineering` (1,200 user
    /// members and one nested group, `Platform Team`), `Licensed Pilot` (licensed through the group
    /// with ENTERPRISEPACK); SKUs ENTERPRISEPACK (plenty of units), SPE_E5 (100 units) and
    /// EXCHANGESTANDARD; 2% of users without usage location. Fixed seed.
    pub fn demo() -> Scenario {
        Scenario {
            seed: 20_240_601,
            tenant_id: Some("8b2f4c6e-1d3a-4e5f-9a7b-0c1d2e3f4a5b".into()),
            domain: "contoso.onmicrosoft.com".into(),
            client_id: Some("3f0c9a7e-5b2d-4c1e-8f6a-9d8e7c6b5a40".into()),
            client_secret: Some("demo-secret~Lc8Q.x2vN7pR4tY6wZ9aB1dF3gH5jK".into()),
            users: 5_000,
            users_without_usage_location: 0.02,
            usage_location: "US".into(),
            groups: vec![
                GroupSpec {
                    leading_users: true,
                    ..GroupSpec::new("All Staff", 5_000)
                },
                GroupSpec::new("Sales", 250),
                GroupSpec {
                    nested_groups: vec!["Platform Team".into()],
                    ..GroupSpec::new("Engineering", 1_200)
                },
                GroupSpec {
                    devices: 2,
                    contacts: 1,
                    ..GroupSpec::new("Platform Team", 40)
                },
                GroupSpec {
                    licenses: vec!["ENTERPRISEPACK".into()],
                    ..GroupSpec::new("Licensed Pilot", 5)
                },
            ],
            skus: vec![
                SkuSpec {
                    sku_part_number: "ENTERPRISEPACK".into(),
                    sku_id: Some(ENTERPRISEPACK_SKU_ID.into()),
                    enabled: 25_000,
                    warning: 0,
                    service_plans: e3_plans(),
                    ..Default::default()
                },
                SkuSpec {
                    sku_part_number: "SPE_E5".into(),
                    sku_id: Some(SPE_E5_SKU_ID.into()),
                    enabled: 100,
                    service_plans: e5_plans(),
                    ..Default::default()
                },
                SkuSpec {
                    sku_part_number: "EXCHANGESTANDARD".into(),
                    sku_id: Some(EXCHANGESTANDARD_SKU_ID.into()),
                    enabled: 50,
                    service_plans: exchange_standard_plans(),
                    ..Default::default()
                },
            ],
        }
    }

    /// A scenario with `users` users, one group holding all of them, and ENTERPRISEPACK with
    /// `units` free units. Handy for tests and benchmarks.
    pub fn simple(seed: u64, users: usize, units: u32) -> Scenario {
        Scenario {
            seed,
            users,
            groups: vec![GroupSpec {
                leading_users: true,
                ..GroupSpec::new("All Users", users)
            }],
            skus: vec![SkuSpec {
                sku_part_number: "ENTERPRISEPACK".into(),
                sku_id: Some(ENTERPRISEPACK_SKU_ID.into()),
                enabled: units,
                service_plans: e3_plans(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }
}

/// Many tenants in one emulator: the other form of `POST /_emulator/scenario` and of
/// `graph-emulator --scenario FILE`. Exactly one of:
///
/// - `{"tenants": [Scenario, …]}` — these tenants, the first being the default one;
/// - `{"count": N, "template": Scenario}` — N tenants made from one scenario: tenant `i`
///   (0-based) takes seed `template.seed + i`, tenant id derived from that seed, and domain
///   `{first label}-{i + 1}.{rest}` (`contoso.onmicrosoft.com` → `contoso-1.onmicrosoft.com` …).
///   A `client_id` / `client_secret` in the template is shared by every tenant (one multi-tenant
///   app registration consented in each, as a service provider's); absent, each tenant derives
///   its own. The template may not fix `tenant_id`.
///
/// Tenant ids and domains must differ between tenants. At most [`TenantSet::MAX_TENANTS`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TenantSet {
    pub tenants: Vec<Scenario>,
    pub count: Option<usize>,
    pub template: Option<Scenario>,
}

impl TenantSet {
    /// Most tenants one emulator serves.
    pub const MAX_TENANTS: usize = 10_000;

    /// The scenarios of every tenant, the default one first. Errors name the field at fault.
    pub fn expand(self) -> Result<Vec<Scenario>, FieldError> {
        let err = |field: &str, message: String| FieldError {
            field: field.into(),
            message,
        };
        match (self.tenants.is_empty(), self.count, self.template) {
            (false, None, None) => {
                if self.tenants.len() > Self::MAX_TENANTS {
                    return Err(err(
                        "tenants",
                        format!("at most {} tenants", Self::MAX_TENANTS),
                    ));
                }
                Ok(self.tenants)
            }
            (true, Some(n), template) => {
                if n == 0 || n > Self::MAX_TENANTS {
                    return Err(err(
                        "count",
                        format!("must be between 1 and {}", Self::MAX_TENANTS),
                    ));
                }
                let template = template.unwrap_or_default();
                if template.tenant_id.is_some() {
                    return Err(err(
                        "template.tenant_id",
                        "tenants made from a template take ids derived from their seeds".into(),
                    ));
                }
                let (label, rest) = template
                    .domain
                    .split_once('.')
                    .unwrap_or((template.domain.as_str(), "onmicrosoft.com"));
                Ok((0..n)
                    .map(|i| Scenario {
                        seed: template.seed.wrapping_add(i as u64),
                        domain: format!("{label}-{}.{rest}", i + 1),
                        ..template.clone()
                    })
                    .collect())
            }
            (true, None, Some(_)) => Err(err("count", "a template needs a count".into())),
            (true, None, None) => Err(err(
                "tenants",
                "give a list of tenants or a count and a template".into(),
            )),
            (false, _, _) => Err(err(
                "tenants",
                "give either a list of tenants or a count and a template, not both".into(),
            )),
        }
    }
}

/// A body the control API (or a `--scenario` / `--faults` file) refuses: the path of the field at
/// fault (`skus[0].units`, `tenants[2].groups[0].members`; empty for the body as a whole) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for FieldError {}

/// Read a JSON body into `T`, naming the path of the field at fault on error (unknown fields
/// included, for types that refuse them).
pub fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, FieldError> {
    // serde's own messages end with " at line L column C"; the path says where.
    fn message(e: &serde_json::Error) -> String {
        let m = e.to_string();
        match m.rfind(" at line ") {
            Some(i) if e.line() > 0 => m[..i].to_string(),
            _ => m,
        }
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let v: T = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            // Not JSON at all: no field is at fault; say where the text breaks.
            return FieldError {
                field: String::new(),
                message: format!("malformed JSON: {inner}"),
            };
        }
        let path = e.path().to_string();
        FieldError {
            field: if path == "." { String::new() } else { path },
            message: message(inner),
        }
    })?;
    de.end().map_err(|e| FieldError {
        field: String::new(),
        message: message(&e),
    })?;
    Ok(v)
}

/// The tenants a body of `POST /_emulator/scenario` describes: a [`Scenario`] (one tenant) or a
/// [`TenantSet`] (recognised by a `tenants`, `count` or `template` member).
pub fn parse_scenarios(bytes: &[u8]) -> Result<Vec<Scenario>, FieldError> {
    let probe: serde_json::Value = from_json(bytes)?;
    let Some(obj) = probe.as_object() else {
        return Err(FieldError {
            field: String::new(),
            message: "expected a JSON object".into(),
        });
    };
    if ["tenants", "count", "template"]
        .iter()
        .any(|k| obj.contains_key(*k))
    {
        from_json::<TenantSet>(bytes)?.expand()
    } else {
        Ok(vec![from_json::<Scenario>(bytes)?])
    }
}
