# An iex session against kv_cnode, typed the way a user of the Mix&OTP guide
# would.  Run by kv_cnode_registry_SUITE as
#   elixir --sname NAME --cookie COOKIE iex_session.exs KVNODE
# Prints "ELIXIR OK" at the end; any mismatch raises (non-zero exit).
[kv_arg] = System.argv()
kv = String.to_atom(kv_arg)
registry = {KV.Registry, kv}

step = fn what -> IO.puts("step: " <> what) end

expect_down = fn ref, pid, reason ->
  receive do
    {:DOWN, ^ref, :process, ^pid, ^reason} -> :ok
    {:DOWN, ^ref, :process, ^pid, other} -> raise "DOWN with #{inspect(other)}, wanted #{inspect(reason)}"
  after
    5000 -> raise "no :DOWN #{inspect(reason)} for #{inspect(pid)}"
  end
end

name = "shopping-#{System.unique_integer([:positive])}"

step.("lookup of an absent bucket")
:error = GenServer.call(registry, {:lookup, name})

step.("create (cast) and lookup")
GenServer.cast(registry, {:create, name})
{:ok, bucket} = GenServer.call(registry, {:lookup, name})
true = is_pid(bucket)
^kv = node(bucket)

step.("create (call) returns the same bucket")
{:ok, ^bucket} = GenServer.call(registry, {:create, name})

step.("put / get / delete")
nil = GenServer.call(bucket, {:get, "milk"})
:ok = GenServer.call(bucket, {:put, "milk", 3})
3 = GenServer.call(bucket, {:get, "milk"})
GenServer.cast(bucket, {:put, "eggs", %{dozen: 1}})
%{dozen: 1} = GenServer.call(bucket, {:get, "eggs"})
:ok = GenServer.call(bucket, {:put, :bread, [1, 2.5, "x"]})
[:bread, "eggs", "milk"] = Enum.sort(GenServer.call(bucket, :keys))
[1, 2.5, "x"] = GenServer.call(bucket, {:delete, :bread})
nil = GenServer.call(bucket, {:get, :bread})

step.(":sys.get_state/1")
%{"milk" => 3, "eggs" => %{dozen: 1}} = :sys.get_state(bucket)

step.("Agent.stop/1 then lookup")
:ok = Agent.stop(bucket)
:error = GenServer.call(registry, {:lookup, name})
try do
  GenServer.call(bucket, {:get, "milk"})
  raise "call to a stopped bucket returned"
catch
  :exit, {:noproc, _} -> :ok
end

step.("Process.monitor/1 + GenServer.stop/2")
{:ok, b2} = GenServer.call(registry, {:create, name <> "-2"})
ref = Process.monitor(b2)
:ok = GenServer.stop(b2, :normal)
expect_down.(ref, b2, :normal)
:error = GenServer.call(registry, {:lookup, name <> "-2"})

{:ok, b3} = GenServer.call(registry, {:create, name <> "-3"})
ref3 = Process.monitor(b3)
:ok = GenServer.stop(b3, {:shutdown, :bye})
expect_down.(ref3, b3, {:shutdown, :bye})
:error = GenServer.call(registry, {:lookup, name <> "-3"})

step.("Process.exit(b, :kill)")
{:ok, b4} = GenServer.call(registry, {:create, name <> "-4"})
ref4 = Process.monitor(b4)
true = Process.exit(b4, :kill)
expect_down.(ref4, b4, :killed)
:error = GenServer.call(registry, {:lookup, name <> "-4"})

step.("Process.exit(b, :normal) is ignored")
{:ok, b5} = GenServer.call(registry, {:create, name <> "-5"})
true = Process.exit(b5, :normal)
:ok = GenServer.call(b5, {:put, 1, 1})
1 = GenServer.call(b5, {:get, 1})
:ok = Agent.stop(b5)

step.("monitor by registered name")
ref5 = Process.monitor(registry)
true = Process.demonitor(ref5, [:flush])
ref6 = Process.monitor({:no_such_name, kv})
expect_down.(ref6, {:no_such_name, kv}, :noproc)

IO.puts("ELIXIR OK")
