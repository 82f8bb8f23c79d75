package kube

import (
	"fmt"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/spec"
)

// specStage views a stored stage through the spec package, whose typed
// accessors check and convert its params the same way for every executor.
func specStage(s pipeline.Stage) spec.Stage {
	return spec.Stage{Name: s.Name, Type: s.Type, Params: s.Params, Labels: s.Labels,
		Vars: s.Vars, Secrets: s.Secrets, Artifacts: s.Artifacts}
}

// paramsError turns a spec accessor's error into one naming the stage.
func paramsError(s pipeline.Stage, err error) error {
	return pipeline.Invalid(fmt.Sprintf("stage %q params", s.Name), "%s", err.Error())
}
