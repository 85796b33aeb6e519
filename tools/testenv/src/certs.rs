//! The control plane's PKI: one CA, the apiserver's serving certificate,
//! client certificates, and the service-account signing key.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::Error;

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub(crate) struct CertPair {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

/// Everything the components need to trust each other.
#[derive(Debug, Clone)]
pub(crate) struct Pki {
    pub(crate) ca: CertPair,
    pub(crate) apiserver: CertPair,
    /// Signs the front proxy's client certificate (`--requestheader-client-ca-file`).
    pub(crate) front_proxy_ca: CertPair,
    /// CN=front-proxy-client: the apiserver's identity towards aggregated
    /// API servers; kube-controller-manager and kube-scheduler read its CA
    /// from the extension-apiserver-authentication ConfigMap.
    pub(crate) front_proxy_client: CertPair,
    /// CN=weblab-admin, O=system:masters.
    pub(crate) admin: CertPair,
    /// CN=system:kube-controller-manager, bound by the default RBAC policy.
    pub(crate) controller_manager: CertPair,
    /// CN=system:kube-scheduler, bound by the default RBAC policy.
    pub(crate) scheduler: CertPair,
    /// Signs service-account tokens (private key, PKCS#8).
    pub(crate) service_account_key_pem: String,
    /// Verifies service-account tokens.
    pub(crate) service_account_public_pem: String,
}

impl Pki {
    pub(crate) fn generate() -> Result<Pki, Error> {
        let (ca, ca_key_pem) = new_ca("weblab-testenv-ca")?;
        // A CA of its own, as kubeadm does: a client certificate from the main
        // CA must not be able to pass as the front proxy and assert identities
        // in headers.
        let (front_proxy_ca, front_proxy_ca_key_pem) = new_ca("weblab-testenv-front-proxy-ca")?;

        let serving = leaf(
            "kube-apiserver",
            None,
            ExtendedKeyUsagePurpose::ServerAuth,
            vec![
                "127.0.0.1".to_owned(),
                "localhost".to_owned(),
                "kubernetes".to_owned(),
                "kubernetes.default".to_owned(),
                "kubernetes.default.svc".to_owned(),
                "kubernetes.default.svc.cluster.local".to_owned(),
                // The first address of the default service CIDR: in-cluster
                // clients (kwok, controllers using the kubernetes Service) dial it.
                "10.0.0.1".to_owned(),
            ],
        )?;
        let apiserver = sign(&serving, &ca)?;
        let admin = sign(
            &leaf(
                "weblab-admin",
                Some("system:masters"),
                ExtendedKeyUsagePurpose::ClientAuth,
                vec![],
            )?,
            &ca,
        )?;
        let controller_manager = sign(
            &leaf(
                "system:kube-controller-manager",
                None,
                ExtendedKeyUsagePurpose::ClientAuth,
                vec![],
            )?,
            &ca,
        )?;
        let scheduler = sign(
            &leaf(
                "system:kube-scheduler",
                None,
                ExtendedKeyUsagePurpose::ClientAuth,
                vec![],
            )?,
            &ca,
        )?;

        let front_proxy_client = sign(
            &leaf(
                "front-proxy-client",
                None,
                ExtendedKeyUsagePurpose::ClientAuth,
                vec![],
            )?,
            &front_proxy_ca,
        )?;

        let service_account = KeyPair::generate()?;
        Ok(Pki {
            ca: CertPair {
                cert_pem: ca.pem(),
                key_pem: ca_key_pem,
            },
            front_proxy_ca: CertPair {
                cert_pem: front_proxy_ca.pem(),
                key_pem: front_proxy_ca_key_pem,
            },
            front_proxy_client,
            apiserver,
            admin,
            controller_manager,
            scheduler,
            service_account_key_pem: service_account.serialize_pem(),
            service_account_public_pem: service_account.public_key_pem(),
        })
    }
}

fn new_ca(common_name: &str) -> Result<(CertifiedIssuer<'static, KeyPair>, String), Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = distinguished_name(common_name, None);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let key_pem = key.serialize_pem();
    Ok((CertifiedIssuer::self_signed(params, key)?, key_pem))
}

fn distinguished_name(common_name: &str, organization: Option<&str>) -> rcgen::DistinguishedName {
    let mut name = rcgen::DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    if let Some(organization) = organization {
        name.push(DnType::OrganizationName, organization);
    }
    name
}

fn leaf(
    common_name: &str,
    organization: Option<&str>,
    usage: ExtendedKeyUsagePurpose,
    subject_alt_names: Vec<String>,
) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::new(subject_alt_names)?;
    params.distinguished_name = distinguished_name(common_name, organization);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn sign(params: &CertificateParams, ca: &CertifiedIssuer<'_, KeyPair>) -> Result<CertPair, Error> {
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, ca)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}
