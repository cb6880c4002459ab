//! The directory rendered as Graph's JSON: users (with `$select`), assigned licenses and their
//! states, license details, groups, devices, contacts and subscribed SKUs.

use std::sync::atomic::Ordering;

use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::model::{Directory, FIRST, LAST, UserState, mix};

pub(super) fn iso(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

impl Directory {
    pub fn user_json(
        &self,
        u: u32,
        st: &UserState,
        select: Option<&[String]>,
    ) -> Map<String, Value> {
        let (f, l) = self.names(u);
        let upn = self.upn(u);
        let mut m = Map::new();
        let want = |k: &str| match select {
            None => DEFAULT_USER_PROPS.contains(&k),
            Some(s) => s.iter().any(|x| x.eq_ignore_ascii_case(k)),
        };
        if want("businessPhones") {
            m.insert("businessPhones".into(), json!([]));
        }
        if want("displayName") {
            m.insert("displayName".into(), json!(format!("{f} {l}")));
        }
        if want("givenName") {
            m.insert("givenName".into(), json!(f));
        }
        if want("jobTitle") {
            m.insert("jobTitle".into(), Value::Null);
        }
        if want("mail") {
            m.insert("mail".into(), json!(upn));
        }
        if want("mobilePhone") {
            m.insert("mobilePhone".into(), Value::Null);
        }
        if want("officeLocation") {
            m.insert("officeLocation".into(), Value::Null);
        }
        if want("preferredLanguage") {
            m.insert("preferredLanguage".into(), json!("en-US"));
        }
        if want("surname") {
            m.insert("surname".into(), json!(l));
        }
        if want("userPrincipalName") {
            m.insert("userPrincipalName".into(), json!(upn));
        }
        if want("id") {
            m.insert("id".into(), json!(self.user_ids[u as usize].to_string()));
        }
        if select.is_some() {
            if want("accountEnabled") {
                m.insert("accountEnabled".into(), json!(!st.account_disabled));
            }
            if want("usageLocation") {
                m.insert(
                    "usageLocation".into(),
                    st.usage_location
                        .map(|c| json!(String::from_utf8_lossy(&c)))
                        .unwrap_or(Value::Null),
                );
            }
            if want("assignedLicenses") {
                m.insert("assignedLicenses".into(), self.assigned_licenses(st));
            }
            if want("licenseAssignmentStates") {
                m.insert("licenseAssignmentStates".into(), self.assignment_states(st));
            }
            if want("mailNickname") {
                m.insert(
                    "mailNickname".into(),
                    json!(format!("{}.{}{}", f, l, u).to_lowercase()),
                );
            }
            if want("userType") {
                m.insert("userType".into(), json!("Member"));
            }
        }
        m
    }

    fn disabled_ids(&self, sku: u16, mask: u64) -> Vec<String> {
        self.skus[sku as usize]
            .plans
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, p)| p.id.to_string())
            .collect()
    }

    pub fn assigned_licenses(&self, st: &UserState) -> Value {
        Value::Array(
            st.licenses
                .iter()
                .map(|h| {
                    json!({
                        "disabledPlans": self.disabled_ids(h.sku, h.disabled_mask()),
                        "skuId": self.skus[h.sku as usize].id.to_string(),
                    })
                })
                .collect(),
        )
    }

    /// `GET /users/{id}/licenseDetails`: one entry per license the user holds (directly or
    /// through a group): `id` (opaque), `skuId`, `skuPartNumber` and every service plan of the
    /// SKU with its `provisioningStatus` — `Disabled` where the assignment disables the plan.
    /// Shape: <https://learn.microsoft.com/en-us/graph/api/resources/licensedetails>.
    pub fn license_details(&self, u: u32, st: &UserState) -> Value {
        Value::Array(
            st.licenses
                .iter()
                .map(|h| {
                    let sku = &self.skus[h.sku as usize];
                    let mask = h.disabled_mask();
                    let plans: Vec<Value> = sku
                        .plans
                        .iter()
                        .enumerate()
                        .map(|(i, p)| {
                            let status = if mask & (1 << i) != 0 {
                                "Disabled"
                            } else {
                                p.provisioning_status.as_str()
                            };
                            json!({
                                "servicePlanId": p.id.to_string(),
                                "servicePlanName": p.name,
                                "provisioningStatus": status,
                                "appliesTo": p.applies_to,
                            })
                        })
                        .collect();
                    json!({
                        "id": format!(
                            "{}_{}",
                            self.user_ids[u as usize].simple(),
                            sku.id.simple()
                        ),
                        "skuId": sku.id.to_string(),
                        "skuPartNumber": sku.part_number,
                        "servicePlans": plans,
                    })
                })
                .collect(),
        )
    }

    pub fn assignment_states(&self, st: &UserState) -> Value {
        let mut v = Vec::new();
        for h in &st.licenses {
            let sku = self.skus[h.sku as usize].id.to_string();
            if let Some(mask) = h.direct {
                v.push(json!({
                    "assignedByGroup": null,
                    "disabledPlans": self.disabled_ids(h.sku, mask),
                    "error": "None",
                    "lastUpdatedDateTime": iso(h.updated),
                    "skuId": sku,
                    "state": "Active",
                }));
            }
            for g in &h.groups {
                v.push(json!({
                    "assignedByGroup": self.groups[*g as usize].id.to_string(),
                    "disabledPlans": [],
                    "error": "None",
                    "lastUpdatedDateTime": iso(h.updated),
                    "skuId": sku,
                    "state": "Active",
                }));
            }
        }
        Value::Array(v)
    }

    pub fn group_json(&self, g: u32) -> Map<String, Value> {
        let gr = &self.groups[g as usize];
        let v = json!({
            "id": gr.id.to_string(),
            "deletedDateTime": null,
            "classification": null,
            "createdDateTime": gr.created,
            "creationOptions": [],
            "description": format!("{} security group", gr.display_name),
            "displayName": gr.display_name,
            "expirationDateTime": null,
            "groupTypes": [],
            "isAssignableToRole": null,
            "mail": null,
            "mailEnabled": false,
            "mailNickname": gr.mail_nickname,
            "membershipRule": null,
            "membershipRuleProcessingState": null,
            "onPremisesDomainName": null,
            "onPremisesLastSyncDateTime": null,
            "onPremisesNetBiosName": null,
            "onPremisesSamAccountName": null,
            "onPremisesSecurityIdentifier": null,
            "onPremisesSyncEnabled": null,
            "preferredDataLocation": null,
            "preferredLanguage": null,
            "proxyAddresses": [],
            "renewedDateTime": gr.created,
            "resourceBehaviorOptions": [],
            "resourceProvisioningOptions": [],
            "securityEnabled": true,
            "securityIdentifier": format!("S-1-12-1-{}", gr.id.as_u64_pair().0 % 4_000_000_000),
            "theme": null,
            "visibility": null,
            "onPremisesProvisioningErrors": [],
            "serviceProvisioningErrors": [],
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    pub fn device_json(&self, d: u32) -> Map<String, Value> {
        let id = self.device_ids[d as usize];
        let v = json!({
            "id": id.to_string(),
            "deletedDateTime": null,
            "accountEnabled": true,
            "approximateLastSignInDateTime": self.created,
            "deviceId": Uuid::from_u64_pair(mix(id.as_u64_pair().0), mix(id.as_u64_pair().1)).to_string(),
            "displayName": format!("DESKTOP-{:07X}", mix(d as u64 ^ self.seed) & 0xFFF_FFFF),
            "isCompliant": true,
            "isManaged": true,
            "operatingSystem": "Windows",
            "operatingSystemVersion": "10.0.22631.4317",
            "trustType": "AzureAd",
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    pub fn contact_json(&self, c: u32) -> Map<String, Value> {
        let h = mix(self.seed ^ 0xC0 ^ (c as u64) << 8);
        let f = FIRST[(h % FIRST.len() as u64) as usize];
        let l = LAST[((h >> 32) % LAST.len() as u64) as usize];
        let v = json!({
            "id": self.contact_ids[c as usize].to_string(),
            "deletedDateTime": null,
            "companyName": "Fabrikam",
            "department": null,
            "displayName": format!("{f} {l} (Fabrikam)"),
            "givenName": f,
            "jobTitle": null,
            "mail": format!("{}.{}@fabrikam.com", f.to_lowercase(), l.to_lowercase()),
            "mailNickname": format!("{}{}", f.to_lowercase(), l.to_lowercase()),
            "surname": l,
            "proxyAddresses": [],
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    pub fn sku_json(&self, i: usize) -> Value {
        let s = &self.skus[i];
        json!({
            "accountName": self.domain.split('.').next().unwrap_or("contoso"),
            "accountId": self.tenant_id.to_string(),
            "appliesTo": s.applies_to,
            "capabilityStatus": s.capability_status,
            "consumedUnits": s.consumed.load(Ordering::Acquire),
            "id": format!("{}_{}", self.tenant_id, s.id),
            "prepaidUnits": {
                "enabled": s.enabled.load(Ordering::Acquire),
                "suspended": s.suspended,
                "warning": s.warning,
                "lockedOut": s.locked_out,
            },
            "servicePlans": s.plans.iter().map(|p| json!({
                "servicePlanId": p.id.to_string(),
                "servicePlanName": p.name,
                "provisioningStatus": p.provisioning_status,
                "appliesTo": p.applies_to,
            })).collect::<Vec<_>>(),
            "skuId": s.id.to_string(),
            "skuPartNumber": s.part_number,
            "subscriptionIds": [s.subscription_id.to_string()],
        })
    }
}

/// Properties Graph returns for a user when no `$select` is given.
pub const DEFAULT_USER_PROPS: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

/// Properties a user can be selected on.
pub const USER_PROPS: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
    "accountEnabled",
    "usageLocation",
    "assignedLicenses",
    "licenseAssignmentStates",
    "mailNickname",
    "userType",
];
