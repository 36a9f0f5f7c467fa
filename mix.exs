defmodule Mix.Tasks.Compile.LockerNif do
  @moduledoc "Builds the Rust NIF with cargo and installs it in priv/ (no Hex package needed)."
  use Mix.Task.Compiler

  @impl true
  def run(_args) do
    # The script says what it does (and what is missing) as it goes.
    case System.cmd("sh", ["native/build_nif.sh"],
           stderr_to_stdout: true,
           into: IO.stream(:stdio, :line)
         ) do
      {_, 0} ->
        # priv/ may not have existed when Mix linked the build directory.
        Mix.Project.build_structure()
        {:ok, []}

      {_, status} ->
        Mix.raise("building the locker NIF failed (exit #{status}): see the lines above")
    end
  end
end

defmodule Locker.MixProject do
  use Mix.Project

  def project do
    [
      app: :locker,
      version: "0.1.0",
      elixir: "~> 1.14",
      compilers: [:locker_nif] ++ Mix.compilers(),
      erlc_paths: ["erlang/src"],
      erlc_options: [:debug_info, :warnings_as_errors],
      elixirc_paths: elixirc_paths(Mix.env()),
      elixirc_options: [warnings_as_errors: true],
      test_paths: ["elixir/test"],
      # Apart from rebar3's _build/{default,test}: both build the same app.
      build_path: "_build/mix",
      start_permanent: Mix.env() == :prod,
      deps: [],
      description:
        "Distributed lease and lock store for the BEAM on a Rust core; " <>
          "wire-compatible with wooga's locker and elixir_locker.",
      package: package()
    ]
  end

  # Hex metadata. The name `locker` on Hex is the original Erlang library's:
  # this one would be published under another package name (the OTP
  # application stays `locker`, so code does not change); a project that
  # also pulls the original in through another dependency adds
  # `override: true` to this dependency (see the README).
  defp package do
    [
      name: "locker_rs",
      licenses: ["MIT"],
      links: %{"Protocol" => "docs/protocol.md"},
      # Every crate of the Cargo workspace: cargo needs all its members to
      # build the NIF (scripts/consumer-test.sh builds from these files).
      files: ~w(mix.exs rebar.config README.md Cargo.toml Cargo.lock src erlang/src elixir/lib
                native/build_nif.sh native/locker_core native/locker_nif native/erl_node
                native/locker_client native/locker_terms native/lockerd docs)
    ]
  end

  # Under Mix the application callback is `Locker` (the Elixir API); under
  # rebar3 it stays `locker_app`. See Locker.Config for the environment.
  def application do
    [
      mod: {Locker, []},
      extra_applications: [:logger],
      env: [
        autostart: true,
        replicas: [],
        lease_expire_interval: 1000,
        lock_expire_interval: 1000,
        push_trans_log_interval: 100,
        registry_lease: 5000
      ]
    ]
  end

  # Test support modules are compiled into ebin so that peer nodes load them.
  defp elixirc_paths(:test), do: ["elixir/lib", "elixir/test/support"]
  defp elixirc_paths(_), do: ["elixir/lib"]
end
