package kube

import (
	"fmt"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// RESTConfig returns the client configuration for a kubeconfig file, or
// the in-cluster configuration (the pod's ServiceAccount) when path is
// empty. The caller (cmd) passes --kubeconfig, or KUBECONFIG.
func RESTConfig(path string) (*rest.Config, error) {
	var (
		rc  *rest.Config
		err error
	)
	if path == "" {
		rc, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("kube: no kubeconfig given and not running in a cluster: %w", err)
		}
	} else {
		rc, err = clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("kube: kubeconfig %s: %w", path, err)
		}
	}
	rc.UserAgent = "kontinuous"
	return rc, nil
}

// NewFromKubeconfig returns the clients the executor needs (Config.Client
// and Config.Dynamic) for a kubeconfig file, or in-cluster when path is
// empty.
func NewFromKubeconfig(path string) (kubernetes.Interface, dynamic.Interface, error) {
	rc, err := RESTConfig(path)
	if err != nil {
		return nil, nil, err
	}
	return NewForConfig(rc)
}

// NewForConfig returns the clients the executor needs for rc.
func NewForConfig(rc *rest.Config) (kubernetes.Interface, dynamic.Interface, error) {
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("kube: client: %w", err)
	}
	dc, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("kube: dynamic client: %w", err)
	}
	return kc, dc, nil
}
