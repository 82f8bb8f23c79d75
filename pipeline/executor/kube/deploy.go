package kube

// Deploy stages: server-side apply from the server, not a kubectl Job.
//
// Why: the manifests must be rendered with the same template engine, the
// same values and the same rules as .pipeline.yml (spec.Render with
// spec.TemplateValues: vars and KONTINUOUS_* only, no environment, no
// functions). That engine is Go code in the server; a kubectl image would
// need a second, divergent renderer inside the pod (or the server's own
// image as an init container). Applying from the server also lets the
// executor enforce the namespace rule object by object before anything is
// applied: every object goes to the pipeline's namespace, objects naming
// another namespace and cluster-scoped kinds are refused. And the result
// is exact and immediate (field-manager "kontinuous", conflicts forced, as
// kubectl apply --server-side --force-conflicts does), with a log line per
// object. The price is that the server's ServiceAccount needs rights on the
// kinds pipelines deploy, in the namespaces pipelines may use: the
// manifests under docs/kubernetes ship them as a separate Role
// (kontinuous-deploy), to be edited to the kinds a cluster's pipelines
// actually deploy and bound only in those namespaces.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitmemory "github.com/go-git/go-git/v5/storage/memory"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	cachedmemory "k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/restmapper"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/spec"
)

// FieldManager is the server-side apply field manager of deploy stages.
const FieldManager = "kontinuous"

// Limits on what a deploy stage reads from the repository.
const (
	maxManifestBytes = 1 << 20
	maxManifests     = 100
)

// deploy applies the deploy stage's manifests to namespace ns.
func (e *Executor) deploy(ctx context.Context, job pipeline.StageJob, ns string, log io.Writer) error {
	p, err := specStage(job.Stage).Deploy()
	if err != nil {
		return paramsError(job.Stage, err)
	}
	var paths []string
	if p.DeployFile != "" {
		paths = append(paths, p.DeployFile)
	}
	if p.DeployDir != "" {
		paths = append(paths, p.DeployDir+"/")
	}
	return e.apply(ctx, job, ns, paths, &lineWriter{w: log})
}

// apply reads the files (a path ending in "/" is a directory: its .yaml,
// .yml and .json files, in name order) at the build's commit, renders
// them, checks every object and then applies them in order.
func (e *Executor) apply(ctx context.Context, job pipeline.StageJob, ns string, paths []string, out *lineWriter) error {
	if e.cfg.Dynamic == nil {
		return pipeline.Errorf(pipeline.ErrNotImplemented, "stage %q: this server cannot apply Kubernetes manifests (no dynamic client configured)", job.Stage.Name)
	}
	tree, err := fetchTree(ctx, job)
	if err != nil {
		return err
	}
	files, err := readManifests(tree, paths)
	if err != nil {
		return err
	}
	values, vars := map[string]string{}, map[string]string{}
	env, _ := plainEnv(job) // secrets are never rendered into manifests
	for k, v := range env {
		if strings.HasPrefix(k, "KONTINUOUS_") {
			values[k] = v
		} else {
			vars[k] = v
		}
	}
	tv := spec.TemplateValues(values, vars)

	mapper := restmapper.NewDeferredDiscoveryRESTMapper(cachedmemory.NewMemCacheClient(e.cfg.Client.Discovery()))
	type item struct {
		obj  *unstructured.Unstructured
		gvr  schema.GroupVersionResource
		file string
	}
	var items []item
	for _, f := range files {
		rendered, err := spec.Render(f.data, tv)
		if err != nil {
			return pipeline.Invalid(f.name, "%v", err)
		}
		objs, err := decodeManifests(rendered)
		if err != nil {
			return pipeline.Invalid(f.name, "%v", err)
		}
		for _, o := range objs {
			gvk := o.GroupVersionKind()
			what := fmt.Sprintf("%s %q", gvk.Kind, o.GetName())
			if gvk.Kind == "" || gvk.Version == "" {
				return pipeline.Invalid(f.name, "an object has no apiVersion or kind")
			}
			if o.GetName() == "" {
				return pipeline.Invalid(f.name, "%s has no metadata.name", gvk.Kind)
			}
			m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				if meta.IsNoMatchError(err) {
					return pipeline.Invalid(f.name, "%s: the cluster has no kind %s in %s", what, gvk.Kind, gvk.GroupVersion())
				}
				return apiError("discover "+gvk.String(), err)
			}
			if m.Scope.Name() != meta.RESTScopeNameNamespace {
				return pipeline.Invalid(f.name, "%s is cluster-scoped; deploy stages may only create objects in namespace %q", what, ns)
			}
			if o.GetNamespace() != "" && o.GetNamespace() != ns {
				return pipeline.Invalid(f.name, "%s names namespace %q; this pipeline deploys to namespace %q only", what, o.GetNamespace(), ns)
			}
			o.SetNamespace(ns)
			items = append(items, item{obj: o, gvr: m.Resource, file: f.name})
		}
	}
	if len(items) == 0 {
		return pipeline.Invalid(strings.Join(paths, ", "), "no Kubernetes objects to deploy")
	}
	for _, it := range items {
		_, err := e.cfg.Dynamic.Resource(it.gvr).Namespace(ns).Apply(ctx, it.obj.GetName(), it.obj,
			metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
		what := fmt.Sprintf("%s %s/%s", it.obj.GetKind(), ns, it.obj.GetName())
		if err != nil {
			return apiError("apply "+what+" from "+it.file, err)
		}
		if err := out.line([]byte("applied " + what + " (" + it.obj.GetAPIVersion() + ") from " + it.file)); err != nil {
			return err
		}
	}
	return nil
}

// fetchTree reads the build's commit from its clone URL into memory.
func fetchTree(ctx context.Context, job pipeline.StageJob) (*object.Tree, error) {
	repo, err := git.Init(gitmemory.NewStorage(), nil)
	if err != nil {
		return nil, fmt.Errorf("kube: init repository: %w", err)
	}
	if _, err := repo.CreateRemote(&gitconfig.RemoteConfig{Name: "origin", URLs: []string{job.CloneURL}}); err != nil {
		return nil, fmt.Errorf("kube: add remote: %w", err)
	}
	var auth transport.AuthMethod
	if job.CloneToken != "" && (strings.HasPrefix(job.CloneURL, "https://") || strings.HasPrefix(job.CloneURL, "http://")) {
		auth = &githttp.BasicAuth{Username: job.CloneUser, Password: job.CloneToken}
	}
	hash := plumbing.NewHash(job.Commit)
	fetch := func(spec string, depth int) error {
		err := repo.FetchContext(ctx, &git.FetchOptions{RemoteName: "origin", Auth: auth, Depth: depth,
			RefSpecs: []gitconfig.RefSpec{gitconfig.RefSpec(spec)}, Tags: git.NoTags})
		if errors.Is(err, git.NoErrAlreadyUpToDate) {
			return nil
		}
		return err
	}
	// The commit alone when the server allows it; else every branch.
	if err := fetch(job.Commit+":refs/heads/kontinuous-build", 1); err != nil {
		if err := fetch("+refs/heads/*:refs/remotes/origin/*", 0); err != nil {
			return nil, pipeline.Errorf(pipeline.ErrUpstream, "cannot fetch the repository to read its manifests: %s", gitMessage(err, job.CloneToken))
		}
	}
	c, err := repo.CommitObject(hash)
	if err != nil {
		return nil, pipeline.Errorf(pipeline.ErrNotFound, "commit %s not found in the repository", job.Commit)
	}
	tree, err := c.Tree()
	if err != nil {
		return nil, fmt.Errorf("kube: read tree of %s: %w", job.Commit, err)
	}
	return tree, nil
}

// gitMessage is err's text with the token masked, in case a transport
// echoed it.
func gitMessage(err error, token string) string {
	msg := err.Error()
	if token != "" {
		msg = strings.ReplaceAll(msg, token, "***")
	}
	return msg
}

type manifest struct {
	name string
	data []byte
}

// readManifests reads the files named by paths from tree.
func readManifests(tree *object.Tree, paths []string) ([]manifest, error) {
	var out []manifest
	read := func(name string, f *object.File) error {
		if f.Size > maxManifestBytes {
			return pipeline.Invalid(name, "is %d bytes; the limit is %d", f.Size, maxManifestBytes)
		}
		s, err := f.Contents()
		if err != nil {
			return fmt.Errorf("kube: read %s: %w", name, err)
		}
		out = append(out, manifest{name: name, data: []byte(s)})
		return nil
	}
	for _, p := range paths {
		if dir, ok := strings.CutSuffix(p, "/"); ok {
			dir = path.Clean(dir)
			sub := tree
			if dir != "." {
				t, err := tree.Tree(dir)
				if err != nil {
					return nil, pipeline.Invalid("deploy_dir", "%q is not a directory at this commit", dir)
				}
				sub = t
			}
			var names []string
			for _, en := range sub.Entries {
				ext := path.Ext(en.Name)
				if en.Mode.IsFile() && (ext == ".yaml" || ext == ".yml" || ext == ".json") {
					names = append(names, en.Name)
				}
			}
			slices.Sort(names)
			for _, n := range names {
				f, err := sub.File(n)
				if err != nil {
					return nil, fmt.Errorf("kube: read %s/%s: %w", dir, n, err)
				}
				if err := read(path.Join(dir, n), f); err != nil {
					return nil, err
				}
			}
			continue
		}
		f, err := tree.File(path.Clean(p))
		if err != nil {
			return nil, pipeline.Invalid("deploy_file", "%q is not a file at this commit", p)
		}
		if err := read(path.Clean(p), f); err != nil {
			return nil, err
		}
	}
	if len(out) > maxManifests {
		return nil, pipeline.Invalid("deploy_dir", "has %d manifests; the limit is %d", len(out), maxManifests)
	}
	return out, nil
}

// decodeManifests splits YAML documents (or JSON) into objects; a kind
// List contributes its items.
func decodeManifests(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.IsList() {
			l, err := u.ToList()
			if err != nil {
				return nil, err
			}
			for i := range l.Items {
				out = append(out, &l.Items[i])
			}
			continue
		}
		out = append(out, u)
	}
}
