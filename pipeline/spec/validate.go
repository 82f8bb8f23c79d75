package spec

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	// maxStages bounds the stages of one pipeline.
	maxStages = 100
	// maxStageName bounds a stage name (it becomes a GitHub status context).
	maxStageName = 100
	// reservedPrefix starts the names of the values the server provides.
	reservedPrefix = "KONTINUOUS_"
)

var (
	// envName: a variable usable as $NAME and as {{.NAME}}.
	envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// dnsLabel: a Kubernetes namespace (RFC 1123 label).
	dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	// dnsSubdomain: a Kubernetes Secret name (RFC 1123 subdomain).
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	// labelName: a label key's name part or a non-empty label value.
	labelName = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
)

// Validate checks the meaning of a parsed spec and reports every problem
// it finds, each with its field path, in a *ValidationError (errors.Is
// ErrInvalid); nil if there are none.
//
// Rules: apiVersion v1alpha1 and kind Pipeline; at least one and at most
// 100 stages; each stage has a name (unique, at most 100 characters, no
// control characters) and a known type; params are those of the type and
// well-typed (see the Stage accessors); timeouts are Go durations in
// (0, 24h]; repository paths are relative and stay inside the repository;
// vars are environment variable names and do not start with KONTINUOUS_;
// secret names are Kubernetes Secret names; the namespace is a Kubernetes
// namespace name; labels follow Kubernetes label syntax; notifications are
// of type slack.
func (d *Definition) Validate() error {
	var p problems
	switch d.APIVersion {
	case APIVersion:
	case "":
		p.add("apiVersion", "", "is required ("+APIVersion+")")
	default:
		p.add("apiVersion", "", "must be "+quote(APIVersion)+", not "+quote(d.APIVersion))
	}
	switch d.Kind {
	case Kind:
	case "":
		p.add("kind", "", "is required ("+Kind+")")
	default:
		p.add("kind", "", "must be "+quote(Kind)+", not "+quote(d.Kind))
	}
	if ns := d.Metadata.Namespace; ns != "" && (len(ns) > 63 || !dnsLabel.MatchString(ns)) {
		p.add("metadata.namespace", "", "must be a Kubernetes namespace name (lower-case letters, digits and '-', at most 63), not "+quote(ns))
	}
	checkLabels(&p, "metadata.labels", "", d.Metadata.Labels)
	checkLabels(&p, "spec.selector.matchLabels", "", d.Spec.Selector.MatchLabels)

	t := d.Spec.Template
	checkLabels(&p, "spec.template.metadata.labels", "", t.Metadata.Labels)
	for i, n := range t.Notif {
		path := index("spec.template.notif", i)
		switch n.Type {
		case NotifSlack:
		case "":
			p.add(path+".type", "", "is required (slack)")
		default:
			p.add(path+".type", "", "must be "+quote(NotifSlack)+", not "+quote(n.Type))
		}
		checkSecrets(&p, path+".secrets", "", n.Secrets)
	}
	checkSecrets(&p, "spec.template.secrets", "", t.Secrets)
	checkVars(&p, "spec.template.vars", "", t.Vars)

	switch n := len(t.Stages); {
	case n == 0:
		p.add("spec.template.stages", "", "must list at least one stage")
	case n > maxStages:
		p.add("spec.template.stages", "", fmt.Sprintf("must list at most %d stages, not %d", maxStages, n))
	}
	seen := map[string]int{}
	for i, s := range t.Stages {
		base := index("spec.template.stages", i)
		switch {
		case strings.TrimSpace(s.Name) == "":
			p.add(base+".name", "", "is required")
		case utf8.RuneCountInString(s.Name) > maxStageName:
			p.add(base+".name", "", fmt.Sprintf("must be at most %d characters", maxStageName))
		case strings.ContainsFunc(s.Name, unicode.IsControl) || !utf8.ValidString(s.Name):
			p.add(base+".name", s.Name, "must not contain control characters")
		default:
			if j, dup := seen[s.Name]; dup {
				p.add(base+".name", s.Name, "is already used by "+index("spec.template.stages", j))
			} else {
				seen[s.Name] = i
			}
		}
		switch _, known := knownParams[s.Type]; {
		case s.Type == "":
			p.add(base+".type", s.Name, "is required (one of "+strings.Join(stageTypes, ", ")+")")
		case !known:
			p.add(base+".type", s.Name, quote(s.Type)+" is not a stage type (one of "+strings.Join(stageTypes, ", ")+")")
		default:
			s.checkParams(&p, base)
		}
		checkLabels(&p, base+".labels", s.Name, s.Labels)
		checkVars(&p, base+".vars", s.Name, s.Vars)
		checkSecrets(&p, base+".secrets", s.Name, s.Secrets)
		for j, a := range s.Artifacts {
			if reason := relPathProblem(a); reason != "" {
				p.add(index(base+".artifacts", j), s.Name, reason)
			}
		}
	}
	return p.err()
}

func checkVars(p *problems, path, stage string, vars map[string]string) {
	for _, k := range sortedKeys(vars) {
		switch {
		case !envName.MatchString(k):
			p.add(join(path, k), stage, "is not a valid variable name (letters, digits and '_', not starting with a digit)")
		case strings.HasPrefix(strings.ToUpper(k), reservedPrefix):
			p.add(join(path, k), stage, "is reserved: names starting with "+reservedPrefix+" are set by the server")
		}
	}
}

func checkSecrets(p *problems, path, stage string, names []string) {
	for i, n := range names {
		if len(n) > 253 || !dnsSubdomain.MatchString(n) {
			p.add(index(path, i), stage, "must be a secret name (lower-case letters, digits, '-' and '.'), not "+quote(n))
		}
	}
}

// checkLabels applies Kubernetes label syntax: keys are [prefix/]name with
// a DNS subdomain prefix and a name of at most 63 characters; values are
// empty or names of at most 63 characters.
func checkLabels(p *problems, path, stage string, labels map[string]string) {
	for _, k := range sortedKeys(labels) {
		name := k
		if i := strings.LastIndexByte(k, '/'); i >= 0 {
			prefix := k[:i]
			name = k[i+1:]
			if len(prefix) > 253 || !dnsSubdomain.MatchString(prefix) {
				p.add(join(path, k), stage, "has an invalid prefix: a label key is [dns-subdomain/]name")
				continue
			}
		}
		if len(name) > 63 || !labelName.MatchString(name) {
			p.add(join(path, k), stage, "is not a valid label key (letters, digits, '-', '_' and '.', at most 63)")
			continue
		}
		if v := labels[k]; v != "" && (len(v) > 63 || !labelName.MatchString(v)) {
			p.add(join(path, k), stage, "has an invalid value "+quote(v)+" (letters, digits, '-', '_' and '.', at most 63)")
		}
	}
}
