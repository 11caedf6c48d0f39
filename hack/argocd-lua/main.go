// Runs an Argo CD resource health check (Lua) against one object, the way
// Argo CD does: the object, decoded from JSON, is the global `obj`; the
// script returns a table {status, message}. Uses gopher-lua, the interpreter
// Argo CD embeds, with the same safe library set (no os/io). Used by
// tests/examples.rs through hack/argocd-lua/run.
//
//	argocd-lua <script.lua> < object.json   prints {"status":...,"message":...}
package main

import (
	"encoding/json"
	"fmt"
	"os"

	lua "github.com/yuin/gopher-lua"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: argocd-lua <script.lua> < object.json")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	check(err)
	var obj any
	check(json.NewDecoder(os.Stdin).Decode(&obj))

	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
	} {
		L.Push(L.NewFunction(lib.open))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	L.SetGlobal("obj", toLua(L, obj))
	check(L.DoString(string(script)))
	result, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		fmt.Fprintln(os.Stderr, "the health script did not return a table")
		os.Exit(1)
	}
	out := map[string]string{
		"status":  lua.LVAsString(result.RawGetString("status")),
		"message": lua.LVAsString(result.RawGetString("message")),
	}
	check(json.NewEncoder(os.Stdout).Encode(out))
}

// toLua converts decoded JSON to Lua values as Argo CD does (objects and
// arrays become tables, null becomes nil).
func toLua(L *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		table := L.NewTable()
		for _, item := range v {
			table.Append(toLua(L, item))
		}
		return table
	case map[string]any:
		table := L.NewTable()
		for key, item := range v {
			table.RawSetString(key, toLua(L, item))
		}
		return table
	default:
		panic(fmt.Sprintf("unexpected JSON value %T", value))
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
