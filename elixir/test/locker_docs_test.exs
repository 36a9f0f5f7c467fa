defmodule LockerDocsTest do
  # Every code block of the documentation runs here, against small
  # clusters of real nodes, or is listed below as not runnable with the
  # reason (and where else it is exercised): the fenced blocks of
  # README.md, docs/*.md and the other READMEs, the indented blocks of the
  # Elixir modules' @moduledoc/@doc, and the edoc blocks of erlang/src.
  # A new or changed block whose first line is not listed fails. The
  # `iex>` examples run as doctests on this node, a master of a
  # three-master cluster (W = 2).
  use ExUnit.Case, async: false
  alias LockerTest.Cluster

  @root Path.expand("../..", __DIR__)
  # README.md, docs/*.md, and the READMEs of the parts of the repository.
  @files ["README.md", "docs/*.md", "*/README.md", "native/*/README.md"]
         |> Enum.flat_map(&Path.wildcard(Path.join(@root, &1)))
         |> Enum.map(&Path.relative_to(&1, @root))
         |> Enum.sort()
         |> Enum.uniq()
  for f <- @files, do: @external_resource(Path.join(@root, f))

  # {file, first line of the block (a prefix), how it is checked}.
  @blocks [
    {"README.md", "./scripts/demo.sh",
     {:skip, "the demo: scripts/test.sh runs scripts/demo.sh as a step of its own"}},
    {"README.md", "# mix.exs",
     {:skip,
      "a dependency line of a user's project: scripts/consumer-test.sh builds such Mix projects"}},
    {"README.md", "%% rebar.config",
     {:skip, "a user's rebar.config: scripts/consumer-test.sh builds such rebar3 projects"}},
    {"README.md", "{ok, _} = locker:start_link(2)", :erlang_quick_start},
    {"README.md", "# config/runtime.exs: a cluster expected to have 3 nodes",
     {:skip,
      "libcluster's configuration (not a dependency of this project): the :locker line is the " <>
        "quick start's, checked below; elixir/test/locker_auto_test.exs runs the scenario " <>
        "(nodes connected after boot) with Node.connect/1"}},
    {"README.md", "# config/runtime.exs", :config},
    {"README.md", "%% sys.config",
     {:skip,
      "an Erlang release's sys.config: tests/locker_auto_SUITE.erl starts nodes with this " <>
        "environment (start_server, masters = auto, cluster_size)"}},
    {"README.md", "{:ok, _} = GenServer.start_link(Worker", :elixir},
    {"README.md", "cargo build --release -p lockerd",
     {:skip,
      "starts a long-running lockerd: tests/lockerd_SUITE.erl starts lockerd with these options"}},
    {"README.md", "use std::time::Duration;",
     {:skip, "Rust: compiled as a doc test of native/locker_client (cargo test --workspace)"}},
    {"native/locker_client/README.md", "use std::time::Duration;",
     {:skip, "Rust: compiled as a doc test of native/locker_client (cargo test --workspace)"}},
    {"README.md", "./scripts/bench.sh",
     {:skip, "the benchmarks take minutes: run by hand, their figures are in the README"}},
    {"docs/elixir.md", "# config/runtime.exs, with libcluster",
     {:skip,
      "libcluster's configuration (not a dependency of this project): its :locker line is " <>
        "checked in the guide's first block; elixir/test/locker_auto_test.exs runs the scenario"}},
    {"docs/elixir.md", "# config/runtime.exs", :config},
    {"docs/protocol.md", "{groups, [\#{id => 1,",
     {:skip,
      "the README's cluster-mode table in Erlang form (that block is checked as :config); " <>
        "tests/locker_groups_SUITE.erl sets such tables on real nodes"}},
    {"fuzz/README.md", "cargo install cargo-fuzz",
     {:skip, "long fuzzing runs: scripts/fuzz.sh runs every target briefly in scripts/test.sh"}},
    {"native/erl_node/README.md", "use std::sync::Arc;",
     {:skip,
      "Rust: the same example is a no_run doctest of native/erl_node/src/lib.rs, compiled by cargo test"}},
    {"native/lockerd/README.md", "cargo build --release -p lockerd",
     {:skip,
      "starts long-running lockerd and registry_owner processes: tests/lockerd_SUITE.erl and " <>
        "the :lockerd tests of elixir/test start both with these options"}},
    {"docs/elixir.md", "{:ok, pid} = GenServer.start_link(Worker", :elixir},
    {"docs/elixir.md", "Locker.transaction({:account, id}", :elixir}
  ]

  # The indented code blocks of the Elixir modules' @moduledoc and @doc
  # (read with Code.fetch_docs/1 when the test runs): {module, where,
  # first line (a prefix), how}. They run in their order.
  @doc_blocks [
    {Locker, "# config/runtime.exs", :config},
    {Locker, "iex>", {:skip, "a doctest (doctest Locker above)"}},
    {Locker, "{:ok, lease} = Locker.acquire({:invoice, 42}", :elixir},
    {Locker, "Locker.transaction(\"report\"", :elixir},
    {Locker, "case Locker.with_lock(:nightly_job", :elixir},
    {Locker.Fsm, "defmodule Door do", :elixir},
    {Locker.Registry, "{:ok, pid} = Agent.start_link", :elixir},
    {Locker.Registry, "iex>", {:skip, "a doctest (doctest Locker.Registry above)"}},
    {Locker.Registry, "Locker.Registry.select(", :elixir},
    {Locker.Server, "defmodule MyServer do", :elixir},
    {Locker.Statem, "defmodule Light do", :elixir}
  ]

  # The edoc code blocks (```...''') of the Erlang modules.
  @edoc_blocks [
    {"erlang/src/locker.erl", "{ok, _} = locker:start_link(2)", :erlang_quick_start}
  ]
  @erl_files Path.wildcard(Path.join(@root, "erlang/src/*.erl"))
  for f <- @erl_files, do: @external_resource(f)

  @edoc_found (for f <- @erl_files,
                   [_, body] <- Regex.scan(~r/^%% ```\n((?:%%.*\n)*?)%% '''/m, File.read!(f)) do
                 code =
                   body
                   |> String.split("\n")
                   |> Enum.map_join("\n", &String.replace_prefix(&1, "%% ", ""))

                 {Path.relative_to(f, @root), String.trim(code)}
               end)

  test "every edoc code block of the Erlang modules runs or is listed" do
    assert @edoc_found != []

    for {file, code} <- @edoc_found do
      how =
        Enum.find_value(@edoc_blocks, :unclassified, fn {f, prefix, how} ->
          if f == file and String.starts_with?(code, prefix), do: how
        end)

      case how do
        :unclassified -> flunk("edoc block of #{file} neither run nor listed: #{code}")
        :erlang_quick_start -> erlang_quick_start(code)
      end
    end
  end

  # Fenced blocks: {file, line, language, code}.
  extract = fn file ->
    {blocks, _open} =
      Path.join(@root, file)
      |> File.read!()
      |> String.split("\n")
      |> Enum.with_index(1)
      |> Enum.reduce({[], nil}, fn
        {text, n}, {acc, nil} ->
          # A language and rustdoc's attributes: ```rust,no_run
          case Regex.run(~r/^\s*```(\w*)[\w,]*\s*$/, text) do
            [_, lang] -> {acc, {lang, n, []}}
            nil -> {acc, nil}
          end

        {text, _n}, {acc, {lang, start, body}} ->
          if String.trim(text) == "```",
            do: {[{file, start, lang, Enum.join(Enum.reverse(body), "\n")} | acc], nil},
            else: {acc, {lang, start, [text | body]}}
      end)

    Enum.reverse(blocks)
  end

  @found Enum.flat_map(@files, extract)

  defp classify(file, code) do
    first = code |> String.split("\n") |> Enum.find("", &(String.trim(&1) != "")) |> String.trim()

    Enum.find_value(@blocks, :unclassified, fn {f, prefix, how} ->
      if f == file and String.starts_with?(first, prefix), do: how
    end)
  end

  # Stand-ins for the user's modules the snippets name.
  defmodule Worker do
    @moduledoc false
    use GenServer
    def init(state), do: {:ok, state}
    def handle_call(:ping, _from, state), do: {:reply, :pong, state}
  end

  defmodule Billing do
    @moduledoc false
    def charge(_id, fencing_token: token) when is_integer(token) and token > 0, do: :charged
  end

  defmodule Storage do
    @moduledoc false
    def write(%{id: _}, fencing_token: token) when is_integer(token) and token > 0, do: :ok
  end

  defmodule Reports do
    @moduledoc false
    def build, do: :report
  end

  defmodule NightlyJob do
    @moduledoc false
    def run, do: :done
  end

  defmodule Accounts do
    @moduledoc false
    def debit(_id, _amount, fence: token) when is_integer(token) and token > 0, do: :debited
  end

  setup_all do
    # This node and two peers: three masters, W = 2 (a majority).
    peers = for name <- [:bd_b, :bd_c], do: Cluster.start_peer(name)
    nodes = [node() | Enum.map(peers, &elem(&1, 1))]
    # The peers start alone (their configuration from the application
    # environment, which a change may replace), then this node makes the
    # three of them one cluster through the safe path, whatever epoch
    # earlier tests left it at.
    for {_, n} <- peers, do: Cluster.start_app(n, masters: [n])
    :ok = :locker_membership.change(nodes, [], 2)
    Cluster.await_ready(nodes)

    on_exit(fn ->
      :ok = :locker_membership.change([node()], [], 1, %{nodes: nodes})
      Cluster.stop(Enum.map(peers, &elem(&1, 0)))
    end)

    %{nodes: nodes}
  end

  doctest Locker
  doctest Locker.Registry

  test "every code block of the Markdown files is classified" do
    unclassified =
      for {file, line, _lang, code} <- @found, classify(file, code) == :unclassified do
        "#{file}:#{line}"
      end

    assert unclassified == [],
           "code blocks neither run nor listed as not runnable in #{__ENV__.file}: " <>
             Enum.join(unclassified, ", ")

    # Every entry still names a block (a stale entry hides nothing).
    for {file, prefix, _} <- @blocks do
      assert Enum.any?(@found, fn {f, _, _, code} ->
               f == file and String.starts_with?(String.trim_leading(code), prefix)
             end),
             "no block of #{file} starts with #{inspect(prefix)}"
    end
  end

  test "every indented code block of the modules' docs runs or is listed" do
    blocks = doc_blocks()
    assert length(blocks) >= length(@doc_blocks)

    unclassified =
      for {mod, where, code} <- blocks, doc_how(mod, code) == :unclassified do
        "#{inspect(mod)} #{where}: #{code |> String.split("\n") |> hd()}"
      end

    assert unclassified == [],
           "doc code blocks neither run nor listed as not runnable in #{__ENV__.file}: " <>
             Enum.join(unclassified, "; ")

    for {mod, prefix, _} <- @doc_blocks do
      assert Enum.any?(blocks, fn {m, _, code} ->
               m == mod and String.starts_with?(code, prefix)
             end),
             "no doc block of #{inspect(mod)} starts with #{inspect(prefix)}"
    end

    # In their order, module by module.
    for {mod, _where, code} <- blocks do
      case doc_how(mod, code) do
        :elixir -> eval_elixir(code)
        :config -> check_config(code)
        _skip -> :ok
      end
    end
  end

  defp doc_how(mod, code) do
    Enum.find_value(@doc_blocks, :unclassified, fn {m, prefix, how} ->
      if m == mod and String.starts_with?(code, prefix), do: how
    end)
  end

  # {module, where, code} for every indented block (4 spaces, after a
  # blank line, not a list item's paragraph) of the docs of locker's
  # Elixir modules.
  defp doc_blocks do
    {:ok, mods} = :application.get_key(:locker, :modules)

    for mod <- Enum.sort(mods),
        match?("Elixir." <> _, Atom.to_string(mod)),
        {:docs_v1, _, _, _, moduledoc, _, docs} <- [Code.fetch_docs(mod)],
        {where, %{"en" => text}} <-
          [
            {"@moduledoc", moduledoc}
            | for({{k, f, a}, _, _, d, _} <- docs, do: {"#{k} #{f}/#{a}", d})
          ],
        code <- indented_blocks(text),
        do: {mod, where, code}
  end

  defp indented_blocks(text) do
    {blocks, current, _prev_blank} =
      text
      |> String.split("\n")
      |> Enum.reduce({[], nil, true}, fn line, {acc, cur, prev_blank} ->
        blank = String.trim(line) == ""
        code = String.starts_with?(line, "    ")

        cond do
          cur != nil and (blank or code) -> {acc, [line | cur], blank}
          cur != nil -> {[cur | acc], nil, blank}
          code and prev_blank and not list_item?(line) -> {acc, [line], false}
          true -> {acc, nil, blank}
        end
      end)

    [current | blocks]
    |> Enum.reject(&is_nil/1)
    |> Enum.map(fn lines ->
      lines
      |> Enum.reverse()
      |> Enum.map_join("\n", &String.replace_prefix(&1, "    ", ""))
      |> String.trim()
    end)
    |> Enum.reverse()
  end

  defp list_item?(line), do: Regex.match?(~r/^\s*([*-]|\d+\.)\s/, line)

  for {file, line, lang, code} <- @found do
    @tag block: "#{file}:#{line}"
    test "#{file}:#{line} (#{lang})" do
      run(unquote(file), unquote(code))
    end
  end

  defp run(file, code) do
    case classify(file, code) do
      {:skip, _reason} -> :ok
      :unclassified -> :ok
      :elixir -> eval_elixir(code)
      :config -> check_config(code)
      :erlang_quick_start -> erlang_quick_start(code)
    end
  end

  # Runs in a process of its own, with the stand-ins aliased and the
  # snippets' free variables bound; processes it linked are killed after.
  defp eval_elixir(code) do
    parent = self()
    binding = [id: 42, amount: 10, invoice: %{id: 42}, opts: [], nodes: [node()]]

    code =
      "alias LockerDocsTest.{Accounts, Billing, NightlyJob, Reports, Storage, Worker}\n" <> code

    {pid, ref} =
      spawn_monitor(fn ->
        {result, _} = Code.eval_string(code, binding)
        {:links, links} = Process.info(self(), :links)
        Enum.each(links, &Process.exit(&1, :kill))
        send(parent, {:evaluated, self(), result})
      end)

    receive do
      {:evaluated, ^pid, result} ->
        Process.demonitor(ref, [:flush])
        refute match?({:error, _}, result), "the block returned #{inspect(result)}"

      {:DOWN, ^ref, :process, ^pid, reason} ->
        flunk("the block raised: #{inspect(reason)}")
    after
      30_000 -> flunk("the block did not finish in 30 s")
    end
  end

  # `config :locker, ...` as a keyword list: every key passes the checks
  # the application runs at start.
  defp check_config(code) do
    list = code |> String.replace(~r/^\s*config :locker,/m, "[") |> Kernel.<>("\n]")
    {opts, _} = Code.eval_string(list)
    assert :locker_config.check(Map.new(opts)) == :ok
    assert %{lease: _} = Locker.Config.registry(opts)
  end

  # On three fresh peers with the application loaded but no server: the
  # block's first line (start_link) on two of them, then the whole block
  # on the third.
  defp erlang_quick_start(code) do
    {nodes, peers} = Cluster.start([:bd_qa, :bd_qb, :bd_qc], autostart: false, masters: [])

    try do
      [a | others] = nodes

      for n <- others,
          do:
            {:ok, _} =
              Cluster.rpc(n, LockerTest.Remote, :start_unlinked, [:locker, :start_link, [2]])

      bindings = [
        Cluster: nodes,
        Masters: nodes,
        Replicas: [],
        Key: "doc-key",
        NewValue: :new_value,
        Other: :other
      ]

      case Cluster.rpc(a, LockerTest.Remote, :eval_erlang, [code, bindings]) do
        {:ok, token} when is_integer(token) -> assert token > 0
        {:ok, 2, 3, 3} -> :ok
      end
    after
      Cluster.stop(peers)
    end
  end
end
