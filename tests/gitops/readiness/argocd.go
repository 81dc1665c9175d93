package main

// Runs an Argo CD health check the way Argo CD's util/lua (VM.runLua and
// ExecuteHealthLua) runs one configured in argocd-cm: a fresh gopher-lua
// state without the standard libraries (a user's script gets no
// useOpenLibs), then only package, base, table and a "safe" os opened; the
// object as the global `obj`, converted value by value as Argo CD's
// decodeValue converts it; a one-second limit; the returned table
// round-tripped through gopher-json into {status, message}, and a status
// Argo CD does not know becomes Unknown.

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	luajson "layeh.com/gopher-json"
)

// The health statuses Argo CD accepts from a script.
var argoCDStatuses = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true,
	"Healthy": true, "Degraded": true, "Missing": true,
}

func argoCDHealth(obj *unstructured.Unstructured, script string) (*verdict, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return nil, fmt.Errorf("open the %q library: %w", lib.name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decodeValue(l, obj.Object))
	if err := l.DoString(script); err != nil {
		return nil, err
	}
	returned := l.Get(-1)
	if returned.Type() != lua.LTTable {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", returned.Type())
	}
	encoded, err := luajson.Encode(returned)
	if err != nil {
		return nil, err
	}
	health := &verdict{}
	if string(encoded) == "[]" {
		// An empty table encodes as an array; Argo CD takes it as no health.
		return health, nil
	}
	if err := json.Unmarshal(encoded, health); err != nil {
		return nil, err
	}
	if !argoCDStatuses[health.Status] {
		return &verdict{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return health, nil
}

// openSafeOs registers the part of Lua's os library Argo CD lets scripts
// use. Argo CD offers os.time and os.date; keymint's script uses neither, so
// only os.time() (the current Unix time) is here.
func openSafeOs(l *lua.LState) int {
	l.Push(l.RegisterModule(lua.OsLibName, map[string]lua.LGFunction{
		"time": func(l *lua.LState) int {
			l.Push(lua.LNumber(time.Now().Unix()))
			return 1
		},
	}))
	return 1
}

// decodeValue converts a decoded JSON value into Lua as Argo CD does:
// numbers to numbers, arrays to sequences, objects to tables, and anything
// else (null) to nil.
func decodeValue(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case json.Number:
		return lua.LString(v)
	case string:
		return lua.LString(v)
	case []any:
		seq := l.CreateTable(len(v), 0)
		for _, item := range v {
			seq.Append(decodeValue(l, item))
		}
		return seq
	case map[string]any:
		table := l.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return table
	}
	return lua.LNil
}
