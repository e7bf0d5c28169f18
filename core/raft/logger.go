package raft

import (
	"context"
	"fmt"
	"log/slog"
	"os"
)

// raftLogger adapts a *slog.Logger to etcd raft's Logger interface.
type raftLogger struct{ l *slog.Logger }

func (r *raftLogger) log(level slog.Level, v ...any) {
	if r.l.Enabled(context.Background(), level) {
		r.l.Log(context.Background(), level, fmt.Sprint(v...))
	}
}

func (r *raftLogger) logf(level slog.Level, format string, v ...any) {
	if r.l.Enabled(context.Background(), level) {
		r.l.Log(context.Background(), level, fmt.Sprintf(format, v...))
	}
}

func (r *raftLogger) Debug(v ...any)                   { r.log(slog.LevelDebug, v...) }
func (r *raftLogger) Debugf(format string, v ...any)   { r.logf(slog.LevelDebug, format, v...) }
func (r *raftLogger) Info(v ...any)                    { r.log(slog.LevelInfo, v...) }
func (r *raftLogger) Infof(format string, v ...any)    { r.logf(slog.LevelInfo, format, v...) }
func (r *raftLogger) Warning(v ...any)                 { r.log(slog.LevelWarn, v...) }
func (r *raftLogger) Warningf(format string, v ...any) { r.logf(slog.LevelWarn, format, v...) }
func (r *raftLogger) Error(v ...any)                   { r.log(slog.LevelError, v...) }
func (r *raftLogger) Errorf(format string, v ...any)   { r.logf(slog.LevelError, format, v...) }

// Fatal and Panic are raft's invariant violations: log, then stop hard.
func (r *raftLogger) Fatal(v ...any) { r.log(slog.LevelError, v...); os.Exit(1) }
func (r *raftLogger) Fatalf(format string, v ...any) {
	r.logf(slog.LevelError, format, v...)
	os.Exit(1)
}
func (r *raftLogger) Panic(v ...any) { s := fmt.Sprint(v...); r.l.Error(s); panic(s) }
func (r *raftLogger) Panicf(format string, v ...any) {
	s := fmt.Sprintf(format, v...)
	r.l.Error(s)
	panic(s)
}
