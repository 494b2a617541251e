//! Consul's catalog: the entries of `GET /v1/catalog/service/<name>` and the Motr endpoint a
//! service's registration stands for.
use serde::Deserialize;

/// A catalog entry of `GET /v1/catalog/service/<name>`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogEntry {
    /// The node's ID (a UUID).
    #[serde(rename = "ID", default)]
    pub id: String,
    pub node: String,
    #[serde(default)]
    pub address: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    #[serde(default)]
    pub service_address: String,
    #[serde(default)]
    pub service_port: u16,
}

impl CatalogEntry {
    pub fn endpoint(&self) -> String {
        endpoint_of(&self.address, &self.service_address, self.service_port)
    }
}

/// An endpoint from a catalog entry: `inet:tcp:127.0.0.1@` + port, or the LNet form
/// node address + `@tcp:12345:44` + `:` + port.
pub fn endpoint_of(node_address: &str, service_address: &str, port: u16) -> String {
    if service_address.starts_with('@') {
        format!("{node_address}{service_address}:{port}")
    } else if service_address.ends_with('@') {
        format!("{service_address}{port}")
    } else if service_address.is_empty() {
        format!("{node_address}:{port}")
    } else {
        format!("{service_address}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_endpoint_forms_of_the_seeds() {
        assert_eq!(
            endpoint_of("127.0.0.1", "inet:tcp:127.0.0.1@", 22001),
            "inet:tcp:127.0.0.1@22001"
        );
        assert_eq!(
            endpoint_of("192.168.180.162", "@tcp:12345:44", 101),
            "192.168.180.162@tcp:12345:44:101"
        );
    }
}
