// Package spec reads .pipeline.yml, the pipeline spec of the original
// Kontinuous (apiVersion v1alpha1, kind Pipeline), into a typed
// Definition, validates it, and renders its templates. It does no I/O: it
// reads no files, environment or network; callers pass bytes and values in.
//
//	apiVersion: v1alpha1
//	kind: Pipeline
//	metadata:
//	  name: my-app
//	  namespace: acaleph          # a request; the server decides
//	spec:
//	  selector:
//	    matchLabels: {app: my-app}
//	  template:
//	    metadata: {name: my-app, labels: {app: my-app}}
//	    notif:
//	      - type: slack
//	        secrets: [slack-creds]
//	    secrets: [deploy-creds]     # each key becomes an environment variable
//	    vars: {GO_VERSION: "1.22"}  # environment variables and template values
//	    stages:
//	      - name: Test
//	        type: command
//	        params:
//	          command: [go, test, ./...]
//	          image: "golang:{{.GO_VERSION}}"
//	          timeout: 10m
//	      - name: Build
//	        type: docker_build
//	      - name: Publish
//	        type: docker_publish
//	        params: {external_registry: quay.io, external_image_name: org/app}
//	      - name: Approve
//	        type: wait
//	        params: {message: "Deploy to prod?"}
//	      - name: Deploy
//	        type: deploy
//	        params: {deploy_file: k8s/app.yml}
//
// Load is the usual entry point: it renders the file as a template (Render,
// with TemplateValues), parses it (Parse) and validates it (Validate). The
// executor then reads each stage through its typed accessor (Stage.Command,
// DockerBuild, DockerPublish, Deploy, Wait) and its environment through
// Definition.StageVars and StageSecrets.
//
// Errors are for the spec's author: a *ValidationError (errors.Is
// ErrInvalid) lists every problem with its field path, e.g.
//
//	spec.template.stages[1] (Build): params.command is required for type command
//
// or the error wraps ErrTooLarge.
package spec
