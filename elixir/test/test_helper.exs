# Peers need a distributed test node. Mix started `locker` before this
# file ran (not distributed: its own single master): restart it under the
# new name, as the only master (a distributed node's default is
# `masters: :auto`, which needs a cluster size).
unless Node.alive?() do
  System.cmd("epmd", ["-daemon"])
  {:ok, _} = :net_kernel.start([:"locker_test_#{System.pid()}@127.0.0.1", :longnames])
  Node.set_cookie(:locker_test)
end

level = Logger.level()
Logger.configure(level: :warning)
:ok = Application.stop(:locker)
Application.put_env(:locker, :masters, [node()])
{:ok, _} = Application.ensure_all_started(:locker)
Logger.configure(level: level)

Code.require_file("cluster_helper.exs", __DIR__)

# Tests with a Rust client need lockerd's release examples (scripts/test.sh
# builds them before `mix test`).
exclude =
  if File.exists?(Path.expand("../../target/release/examples/registry_owner", __DIR__)) do
    []
  else
    IO.puts(
      "target/release/examples/registry_owner missing: :lockerd tests skipped " <>
        "(cargo build --release -p lockerd --examples)"
    )

    [:lockerd]
  end

ExUnit.start(exclude: exclude)
