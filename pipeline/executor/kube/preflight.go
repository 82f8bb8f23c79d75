package kube

import (
	"context"
	"fmt"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Preflight checks, at server start-up, that the cluster answers and what
// the executor may do there. err is set when the API server cannot be
// reached or refuses the server's credentials: the server should not
// start. warnings lists, for each namespace stages may run in, the rights
// the executor needs (docs/kubernetes/rbac.yaml's kontinuous-executor
// Role) that the API server says it lacks; stages there would fail, but
// the operator may bind the Role later, so they do not stop start-up.
// Bound ctx: each check is one request.
func (e *Executor) Preflight(ctx context.Context) (warnings []string, err error) {
	if _, err := e.cfg.Client.Discovery().RESTClient().Get().AbsPath("/version").DoRaw(ctx); err != nil {
		return nil, fmt.Errorf("cannot reach the Kubernetes API server: %w", err)
	}
	checks := []authorizationv1.ResourceAttributes{
		{Group: "batch", Resource: "jobs", Verb: "create"},
		{Group: "batch", Resource: "jobs", Verb: "watch"},
		{Group: "batch", Resource: "jobs", Verb: "delete"},
		{Resource: "pods", Verb: "list"},
		{Resource: "pods", Subresource: "log", Verb: "get"},
		{Resource: "secrets", Verb: "get"},
		{Resource: "secrets", Verb: "create"},
		{Resource: "secrets", Verb: "update"},
		{Resource: "secrets", Verb: "delete"},
		{Resource: "secrets", Verb: "deletecollection"},
	}
	for _, ns := range e.allowed {
		var missing []string
		for _, c := range checks {
			c.Namespace = ns
			r, err := e.cfg.Client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
				&authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &c}},
				metav1.CreateOptions{})
			if err != nil {
				return warnings, fmt.Errorf("checking the executor's rights in namespace %q: %w", ns, err)
			}
			if !r.Status.Allowed {
				what := c.Resource
				if c.Subresource != "" {
					what += "/" + c.Subresource
				}
				missing = append(missing, c.Verb+" "+what)
			}
		}
		if len(missing) > 0 {
			warnings = append(warnings, fmt.Sprintf("namespace %q: the server may not %v there; stages in it will fail until docs/kubernetes/rbac.yaml is applied in it", ns, missing))
		}
	}
	return warnings, nil
}
