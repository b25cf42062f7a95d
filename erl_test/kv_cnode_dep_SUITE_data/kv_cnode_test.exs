# Copied into a scratch mix project by kv_cnode_dep_SUITE.
defmodule KvCnodeTest do
  use ExUnit.Case

  defp record(node) do
    case System.get_env("KV_CNODE_DEP_NODES") do
      nil -> :ok
      f -> File.write!(f, "#{node}\n", [:append])
    end
  end

  test "a kv_cnode node from ExUnit" do
    {:ok, node} = :kv_cnode.start(%{})
    record(node)
    assert Node.ping(node) == :pong
    assert :kv_cnode.lookup(node, "shopping") == :error
    {:ok, bucket} = :kv_cnode.create(node, "shopping")
    assert :kv_cnode.lookup(node, "shopping") == {:ok, bucket}
    assert :kv_cnode.put(bucket, "milk", 3) == :ok
    assert :kv_cnode.get(bucket, "milk") == 3
    assert :kv_cnode.delete(bucket, "milk") == 3
    assert GenServer.call({KV.Registry, node}, {:lookup, "shopping"}) == {:ok, bucket}
    assert :kv_cnode.stop(node) == :ok
    assert Node.ping(node) == :pang
  end

  test "a bad option is an error with the node's message" do
    assert {:error, reason} = :kv_cnode.start(%{args: ["--bogus"]})
    assert reason =~ "--bogus"
  end
end
