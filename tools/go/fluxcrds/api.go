// Package fluxcrds only pins the helm-controller API packages that
// hack/tools.sh generates the HelmRelease CRD from.
package fluxcrds

import (
	_ "github.com/fluxcd/helm-controller/api/v2"
	_ "github.com/fluxcd/helm-controller/api/v2beta1"
	_ "github.com/fluxcd/helm-controller/api/v2beta2"
)
