package etcdstore

import (
	"context"
	"log/slog"
	"sort"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newZapLogger returns a zap logger that forwards entries at min or above
// to l (etcd and its client log through zap). A nil l discards everything.
// While quiet is set (nil: never), entries are passed at debug level: the
// errors etcd logs while it is being closed are expected.
func newZapLogger(l *slog.Logger, min zapcore.Level, component string, quiet *atomic.Bool) *zap.Logger {
	if l == nil {
		return zap.NewNop()
	}
	return zap.New(&slogCore{l: l.With("component", component), min: min, quiet: quiet})
}

// benign are warnings etcd gives on every start of a loopback-only
// embedded server; they are passed at debug level.
var benign = map[string]bool{
	"Running http and grpc server on single port. This is not recommended for production.": true,
	"simple token is not cryptographically signed":                                         true,
}

// slogCore is a zapcore.Core writing to a slog.Logger.
type slogCore struct {
	l     *slog.Logger
	min   zapcore.Level
	quiet *atomic.Bool
	attrs []slog.Attr
}

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

// Enabled implements zapcore.LevelEnabler.
func (c *slogCore) Enabled(l zapcore.Level) bool {
	return l >= c.min && c.l.Enabled(context.Background(), slogLevel(l))
}

// With implements zapcore.Core.
func (c *slogCore) With(fs []zapcore.Field) zapcore.Core {
	n := *c
	n.attrs = append(append([]slog.Attr(nil), c.attrs...), fieldAttrs(fs)...)
	return &n
}

// Check implements zapcore.Core.
func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

// Write implements zapcore.Core.
func (c *slogCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	level := slogLevel(e.Level)
	if benign[e.Message] || (c.quiet != nil && c.quiet.Load()) {
		level = slog.LevelDebug
		if !c.l.Enabled(context.Background(), level) {
			return nil
		}
	}
	r := slog.NewRecord(e.Time, level, e.Message, 0)
	r.AddAttrs(c.attrs...)
	r.AddAttrs(fieldAttrs(fs)...)
	return c.l.Handler().Handle(context.Background(), r)
}

// Sync implements zapcore.Core; slog handlers have nothing to flush.
func (c *slogCore) Sync() error { return nil }

func fieldAttrs(fs []zapcore.Field) []slog.Attr {
	if len(fs) == 0 {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fs {
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	attrs := make([]slog.Attr, 0, len(keys))
	for _, k := range keys {
		attrs = append(attrs, slog.Any(k, enc.Fields[k]))
	}
	return attrs
}
