defmodule Locker do
  @moduledoc """
  A distributed lease and lock store for the BEAM: the Elixir API of
  `locker`, wire-compatible with wooga/locker and a drop-in replacement for
  elixir_locker.

  ## The application

  Starting the `:locker` application on a node starts, under
  `Locker.Supervisor`:

    * the `locker` server (unless `config :locker, autostart: false`).
      By default (`masters: :auto`) its masters follow the cluster: the
      connected nodes that run `locker` in this mode, found through
      `:net_kernel.monitor_nodes/1` (libcluster, `Node.connect/1` and DNS
      discovery only connect nodes). Set `:cluster_size` to the number of
      nodes you expect: a node grants nothing until a quorum of them is
      connected (`{:error, :no_quorum}` and a log line say why), then the
      cluster forms, and later joins and leaves go through the safe
      reconfiguration path (README, "Clusters"). With a list of
      `:masters`, `:replicas` (default `[]`) and a write quorum W from
      `:quorum` (elixir_locker's key) or `:w`, by default **a majority of
      the masters** (elixir_locker defaulted to 0, which let every lock
      succeed without a vote), the server sends its masters, replicas and
      W to the servers of the other masters and replicas that run
      `locker` once started (`set_nodes/3`, `set_w/2`; nodes without
      `locker` are skipped);
    * `Locker.Registry` (unless `registry_autostart: false`): a
      supervisor of `Locker.Registry.Table`, `Locker.Registry.Keeper`
      (which keeps `Locker.Registry` names alive, and stops owners that
      lose theirs) and `Locker.Registry.Resolver` (which resolves names on
      nodes that are neither masters nor replicas);
    * `Locker.AcquireQueue`, which orders `acquire/2` callers of this node.

  See `Locker.Config` for every key of the application environment. A bad
  key stops the start with `{:bad_config, messages}` (one message per bad
  key, each logged).

      # config/runtime.exs: three nodes, connected by libcluster or Node.connect/1
      config :locker, cluster_size: 3

  Or a fixed set of masters:

      # config/runtime.exs
      config :locker, masters: [:"a@host", :"b@host", :"c@host"], quorum: 2

  With `autostart: false`, start the server in your own tree with the same
  options: `children = [{Locker, masters: nodes, quorum: 2}]`.

  ## The `locker` API

  `lock/4`, `update/4`, `release/3`, `extend_lease/3`, `wait_for/2`,
  `wait_for_release/2`, `dirty_read/1`, `master_dirty_read/1`, `lag/0`,
  `summary/0`, `set_w/2`, `set_nodes/3` call the Erlang module `:locker`
  with elixir_locker's defaults and return exactly its replies:

      iex> Locker.lock("my_lock", self(), 60_000)
      {:ok, 2, 3, 3}
      iex> Locker.dirty_read("my_lock")
      {:ok, self()}
      iex> Locker.release("my_lock", self())
      {:ok, 2, 3, 3}

  ## Locks with fencing tokens

  `acquire/2` blocks until the key is free (woken by the holder's release or
  expiry, in arrival order among the callers of this node) and returns a
  `Locker.Lease` with a fencing token; `transaction/4` and `with_lock/3`
  run a function under a lock and always release it:

      {:ok, lease} = Locker.acquire({:invoice, 42}, lease: 10_000, timeout: 5_000)
      :ok = Storage.write(invoice, fencing_token: lease.token)
      {:ok, lease} = Locker.extend(lease, 10_000)
      :ok = Locker.release(lease)

      Locker.transaction({:invoice, 42}, 10_000, fn lease ->
        Billing.charge(42, fencing_token: lease.token)
      end)

  Read `docs/elixir.md` for what leases, dirty reads and fencing tokens do
  and do not guarantee.

  ## Telemetry

  With `:telemetry` loaded, locks, releases, extensions, acquisitions and
  registry changes emit events: see `Locker.Telemetry`.
  """

  use Application
  require Logger
  alias Locker.{Acquire, Config, Lease, Telemetry}

  @typedoc "A key of `locker`: any term (keys compare with `===`)."
  @type key :: term()
  @typedoc "A value of `locker`: any term."
  @type value :: term()
  @typedoc "The reply of `lock/4`, `update/4`, `release/3`: `{:ok, W, Votes, Commits}` or no quorum."
  @type lock_result ::
          {:ok, pos_integer(), non_neg_integer(), non_neg_integer()} | {:error, :no_quorum}

  @typedoc "Options of `acquire/2`."
  @type acquire_opts :: [
          timeout: timeout(),
          lease: pos_integer(),
          value: value(),
          retries: non_neg_integer() | :infinity,
          retry_interval: non_neg_integer(),
          jitter: non_neg_integer()
        ]

  ## Application

  @doc """
  The application callback: checks the application environment
  (`Locker.Config.check/0`), then starts `Locker.Supervisor` with the
  `locker` server (when `:autostart`), `Locker.Registry` (when
  `:registry_autostart`) and `Locker.AcquireQueue`.
  """
  @impl Application
  @spec start(Application.start_type(), term()) :: {:ok, pid()} | {:error, term()}
  def start(_type, _args) do
    if warning = Config.legacy_env_warning(), do: Logger.warning(warning)

    case Config.check() do
      :ok ->
        server = if Config.autostart?(), do: [{Locker, []}], else: []
        registry = if Config.registry_autostart?(), do: [Locker.Registry], else: []
        children = server ++ registry ++ [Locker.AcquireQueue]
        Supervisor.start_link(children, strategy: :one_for_one, name: Locker.Supervisor)

      {:error, messages} ->
        Enum.each(messages, &Logger.error/1)
        {:error, {:bad_config, messages}}
    end
  end

  @doc false
  @impl Application
  def stop(_state), do: :ok

  @doc """
  A child spec for the `locker` server, for applications that set
  `autostart: false` and start it in their own supervision tree:
  `{Locker, opts}`, options as in the application environment
  (`:masters`, `:replicas`, `:quorum` or `:w`, `:lease_expire_interval`,
  `:lock_expire_interval`, `:push_trans_log_interval`); missing ones come
  from the application environment, then the defaults (`Locker.Config`).
  """
  @spec child_spec(Config.server_opts()) :: Supervisor.child_spec()
  def child_spec(opts) do
    %{
      id: Locker,
      start: {Locker, :start_link, [opts]},
      type: if(Config.server(opts).auto, do: :supervisor, else: :worker),
      shutdown: 5000,
      modules: [:locker_server]
    }
  end

  @doc """
  Starts the `locker` server (registered locally as `locker`), linked to the
  caller, and sends its masters, replicas and W to the servers of the other
  masters and replicas that answer (nodes that run no `locker` are
  skipped). With `masters: :auto` on a distributed node, starts a
  supervisor of the server and `:locker_auto` instead (and sends nothing:
  the masters form as the README's "Clusters" section says). See
  `child_spec/1` for the options.
  """
  @spec start_link(Config.server_opts()) :: {:ok, pid()} | {:error, term()}
  def start_link(opts \\ []) do
    case Config.server(opts) do
      %{auto: nil} = conf -> start_fixed(conf)
      conf -> start_auto(conf)
    end
  end

  # `masters: :auto`: the server (alone, with a W it cannot reach alone),
  # then `:locker_auto`, under one supervisor (a restarted server restarts
  # `:locker_auto` too).
  defp start_auto(conf) do
    children = [
      %{
        id: :locker,
        start: {:locker_auto, :start_server, [conf.args, conf.auto]},
        type: :worker,
        shutdown: 5000,
        modules: [:locker_server]
      },
      :locker_auto.child_spec(conf.auto)
    ]

    Supervisor.start_link(children, strategy: :rest_for_one, max_restarts: 10, max_seconds: 10)
  end

  defp start_fixed(%{groups: groups} = conf) when is_list(groups) do
    # Cluster mode: the group table first (coordinators route by it).
    case :locker_groups.set(groups) do
      :ok -> start_fixed(%{conf | groups: nil})
      {:error, reason} -> {:error, reason}
    end
  end

  defp start_fixed(conf) do
    case :locker_server.start_configured(conf.args, conf.masters, conf.replicas) do
      {:ok, pid} ->
        announce(conf)
        {:ok, pid}

      error ->
        error
    end
  end

  # Tells the other masters and replicas running `locker` the node lists
  # and W (the default W too, so that no master keeps a minority quorum
  # from a smaller cluster).
  defp announce(conf) do
    others = Enum.uniq(conf.masters ++ conf.replicas) -- [node()]
    answers = others |> :erpc.multicall(:erlang, :whereis, [:locker], 2000) |> Enum.zip(others)
    running = for {{:ok, pid}, node} when is_pid(pid) <- answers, do: node
    unreachable = for {{:error, {:erpc, :noconnection}}, node} <- answers, do: node

    if unreachable != [] do
      Logger.warning(
        "locker: unknown or unreachable nodes among the masters and replicas: " <>
          "#{inspect(unreachable)} (they count as down until they run locker and can be reached)"
      )
    end

    # Both go through locker_membership (configuration epochs): an error
    # (a master not started yet, a W that does not fit) changes nothing.
    with true <- running != [],
         :ok <- :locker.set_nodes(running, conf.masters, conf.replicas),
         :ok <- :locker.set_w(running, conf.w) do
      :ok
    else
      false ->
        :ok

      {:error, {why, node}} when why in [:not_running, :unreachable] ->
        # A master that has not started yet: the last one to start
        # configures them all.
        Logger.info("locker: the other masters not configured yet (#{why}: #{inspect(node)})")
        :ok

      {:error, reason} ->
        Logger.warning("locker: could not configure the other masters: #{inspect(reason)}")
        :ok
    end
  catch
    kind, reason ->
      # A node that stopped between the check and the call.
      Logger.warning("locker: could not configure the other masters: #{inspect({kind, reason})}")
      :ok
  end

  ## The `locker` API (elixir_locker's)

  @doc """
  Sets the write quorum W of the cluster and of every node of `cluster`
  (`:locker.set_w/2`, through `:locker_membership`): `{:error, reason}`
  (nothing changed) for a W that does not fit the masters or a node that
  cannot be configured.
  """
  @spec set_w([node()], pos_integer()) :: :ok | {:error, term()}
  def set_w(cluster, w), do: :locker.set_w(cluster, w)

  @doc """
  Sets the masters and replicas of the cluster and of every node of
  `cluster` (`:locker.set_nodes/3`, through `:locker_membership`): errors
  as `set_w/2`.
  """
  @spec set_nodes([node()], [node()], [node()]) :: :ok | {:error, term()}
  def set_nodes(cluster, primaries, replicas), do: :locker.set_nodes(cluster, primaries, replicas)

  @doc """
  Takes `key` for `value` for `lease_length` ms if it is free on a quorum
  of masters: `{:ok, w, votes, commits}` or `{:error, :no_quorum}`
  (`:locker.lock/4`).
  """
  @spec lock(key(), value(), non_neg_integer(), timeout()) :: lock_result()
  def lock(key, value, lease_length \\ 2000, timeout \\ 5000) do
    Telemetry.span([:lock], %{key: key, lease: lease_length}, fn ->
      started!(fn -> :locker.lock(key, value, lease_length, timeout) end)
    end)
  end

  @doc """
  Replaces the value of `key` by `new_value` if a quorum of masters holds
  `value`; the lease keeps its expiry (`:locker.update/4`).
  """
  @spec update(key(), value(), value(), timeout()) :: lock_result()
  def update(key, value, new_value, timeout \\ 5000),
    do: started!(fn -> :locker.update(key, value, new_value, timeout) end)

  @doc """
  Waits until `key` has a value on this node: `{:ok, value}`; exits like
  `GenServer.call/3` on timeout (`:locker.wait_for/2`).
  """
  @spec wait_for(key(), timeout()) :: {:ok, value()}
  def wait_for(key, timeout \\ 5000), do: :locker.wait_for(key, timeout)

  @doc """
  Waits until `key` is released or expires on this node: `{:ok, :released}`,
  or `{:error, :key_not_locked}` at once if it holds no value here; exits
  like `GenServer.call/3` on timeout (`:locker.wait_for_release/2`).
  """
  @spec wait_for_release(key(), timeout()) :: {:ok, :released} | {:error, :key_not_locked}
  def wait_for_release(key, timeout \\ 5000), do: :locker.wait_for_release(key, timeout)

  @doc """
  Deletes `key` on masters and replicas if a quorum of masters holds
  `value` (`:locker.release/3`).
  """
  @spec release(key(), value(), timeout()) :: lock_result()
  def release(key, value, timeout \\ 5000) do
    Telemetry.span([:release], %{key: key}, fn ->
      started!(fn -> :locker.release(key, value, timeout) end)
    end)
  end

  @doc """
  Makes the lease of `key`, held by `value`, expire `lease_length` ms from
  now: `:ok` or `{:error, :no_quorum}` (`:locker.extend_lease/3`).
  """
  @spec extend_lease(key(), value(), non_neg_integer()) :: :ok | {:error, :no_quorum}
  def extend_lease(key, value, lease_length \\ 2000) do
    Telemetry.span([:extend], %{key: key, lease: lease_length}, fn ->
      started!(fn -> :locker.extend_lease(key, value, lease_length) end)
    end)
  end

  @doc """
  Reads `key` from this node's store, in the calling process:
  `{:ok, value}` or `{:error, :not_found}` (`:locker.dirty_read/1`).
  Not a quorum read.
  """
  @spec dirty_read(key()) :: {:ok, value()} | {:error, :not_found}
  def dirty_read(key), do: :locker.dirty_read(key)

  @doc """
  A dirty read on a master: here if this node is one, else on a random
  master through `:rpc` (`:locker.master_dirty_read/1`).
  """
  @spec master_dirty_read(key()) :: {:ok, value()} | {:error, :not_found} | {:badrpc, term()}
  def master_dirty_read(key), do: started!(fn -> :locker.master_dirty_read(key) end)

  @doc "Times a lock and release of a probe key: `{millis, lock_result}` (`:locker.lag/0`)."
  @spec lag() :: {float(), lock_result()}
  def lag, do: :locker.lag()

  @doc "Counts of live promises and leases on this node (`:locker.summary/0`)."
  @spec summary() :: [write_locks: non_neg_integer(), leases: non_neg_integer()]
  def summary, do: :locker.summary()

  ## Leases with fencing tokens

  @doc """
  Takes `key`, waiting as long as `:timeout` for it to be free:
  `{:ok, %Locker.Lease{}}`, `{:error, :timeout}`, or `{:error, :no_quorum}`
  when `:retries` attempts failed.

  Options:

    * `:timeout` (ms or `:infinity`, default 5000): the whole wait,
      queueing included.
    * `:lease` (ms, default 5000): how long the lock holds unless extended
      (`extend/3`) or released (`release/1`).
    * `:value` (default `self()`): the value stored under `key`.
    * `:retries` (default `:infinity`): how many failed attempts after the
      first are allowed before `{:error, :no_quorum}`.
    * `:retry_interval` (ms, default 50) and `:jitter` (ms, default 50):
      after an attempt that failed while this node's store shows no holder
      to wait for (two coordinators racing, a release or write not applied
      on every master yet, masters down), the caller pauses before the next
      attempt, as Redlock does: pauses start at 1 ms and double up to
      `:retry_interval`, plus a random `0..jitter` ms (at most the pause
      itself). On a node that is neither master nor replica (its store is
      empty, so it never sees a holder) every pause is `:retry_interval`
      plus jitter: such nodes poll.

  Callers on this node are served in arrival order, one attempt per key at
  a time (`Locker.AcquireQueue`). While this node's store shows a holder
  (it does on masters and replicas), the head waits for its release or
  expiry through the local `locker` server, without polling; each node
  expires leases to the millisecond.

  Every success carries a fencing token (`:locker.lock_with_token/4`)
  strictly greater than any token issued for `key` before, as long as a
  quorum of this project's masters stays up.
  """
  @spec acquire(key(), acquire_opts()) ::
          {:ok, Lease.t()} | {:error, :timeout | :no_quorum}
  def acquire(key, opts \\ []) do
    opts = validate_acquire_opts!(opts)

    meta = %{
      key: key,
      lease: Keyword.get(opts, :lease, 5000),
      timeout: Keyword.get(opts, :timeout, 5000)
    }

    Telemetry.span([:acquire], meta, fn -> started!(fn -> Acquire.run(key, opts) end) end, fn
      {:ok, lease} -> %{result: :ok, token: lease.token}
      {:error, reason} -> %{result: reason}
    end)
  end

  @doc """
  Releases a lease taken with `acquire/2`: `:ok`, or `{:error, :no_quorum}`
  when a quorum of masters no longer holds it (it expired, or was taken
  over).
  """
  @spec release(Lease.t()) :: :ok | {:error, :no_quorum}
  def release(%Lease{key: key, value: value}) do
    case release(key, value) do
      {:ok, _w, _votes, _commits} -> :ok
      {:error, :no_quorum} -> {:error, :no_quorum}
    end
  end

  @doc """
  Makes a lease expire `lease` ms from now: `{:ok, lease}` with the new
  `expires_at` (same token), or `{:error, :no_quorum}` when a quorum of
  masters no longer holds it.
  """
  @spec extend(Lease.t(), pos_integer(), timeout()) :: {:ok, Lease.t()} | {:error, :no_quorum}
  def extend(%Lease{key: key, value: value} = lease, ms, timeout \\ 5000) do
    unless is_integer(ms) and ms > 0 do
      raise ArgumentError,
            "Locker.extend/3: the lease must be a positive integer of milliseconds, got: #{inspect(ms)}"
    end

    sent = System.monotonic_time(:millisecond)

    Telemetry.span([:extend], %{key: key, lease: ms}, fn ->
      case started!(fn -> :locker.extend_lease(key, value, ms, timeout) end) do
        :ok -> {:ok, %{lease | expires_at: Lease.validity_end(sent, ms)}}
        {:error, :no_quorum} -> {:error, :no_quorum}
      end
    end)
  end

  @doc """
  Runs `fun` holding `key` for at most `ttl` ms and returns its result, or
  `{:error, :lock_failure}` when the lock could not be taken (as Redlock's
  `transaction/3`). `fun` takes no argument or the `Locker.Lease`. The lock
  is always released, also when `fun` raises, throws or exits (which then
  propagates). `opts` are those of `acquire/2` (`:lease` is `ttl`).

      Locker.transaction("report", 30_000, fn -> Reports.build() end)
  """
  @spec transaction(key(), pos_integer(), (() -> result) | (Lease.t() -> result), acquire_opts()) ::
          result | {:error, :lock_failure}
        when result: var
  def transaction(key, ttl, fun, opts \\ []) do
    check_fun!(fun, "Locker.transaction/4")

    unless is_integer(ttl) and ttl > 0 do
      raise ArgumentError,
            "Locker.transaction/4: ttl must be a positive integer of milliseconds, got: #{inspect(ttl)}"
    end

    unless Keyword.keyword?(opts) do
      raise ArgumentError,
            "Locker.transaction/4: options must be a keyword list, got: #{inspect(opts)}"
    end

    case with_lock(key, Keyword.put(opts, :lease, ttl), fun) do
      {:ok, result} -> result
      {:error, _} -> {:error, :lock_failure}
    end
  end

  @doc """
  Runs `fun` holding `key` (taken with `acquire/2` and `opts`):
  `{:ok, result}`, or the error of `acquire/2`. `fun` takes no argument or
  the `Locker.Lease`. The lock is always released, also when `fun` raises,
  throws or exits (which then propagates).

      case Locker.with_lock(:nightly_job, [lease: 60_000], &NightlyJob.run/0) do
        {:ok, :done} -> :ok
        {:error, reason} -> {:skipped, reason}
      end
  """
  @spec with_lock(key(), acquire_opts(), (() -> result) | (Lease.t() -> result)) ::
          {:ok, result} | {:error, :timeout | :no_quorum}
        when result: var
  def with_lock(key, opts \\ [], fun) do
    check_fun!(fun, "Locker.with_lock/3")

    case acquire(key, opts) do
      {:ok, lease} ->
        try do
          {:ok, if(is_function(fun, 1), do: fun.(lease), else: fun.())}
        after
          _ = release(lease)
        end

      {:error, _} = error ->
        error
    end
  end

  @doc false
  # Runs `fun`, which calls the `locker` coordinator: before the server
  # ever started on this node, raises `Locker.NotStartedError` instead of
  # the Erlang error `{:locker, :not_started}`.
  @spec started!((() -> result)) :: result when result: var
  def started!(fun) do
    fun.()
  catch
    :error, {:locker, :not_started} -> raise Locker.NotStartedError, node: node()
    :throw, {:locker, :no_such_meta_key} -> raise Locker.NotStartedError, node: node()
  end

  defp check_fun!(fun, _what) when is_function(fun, 0) or is_function(fun, 1), do: :ok

  defp check_fun!(fun, what) do
    raise ArgumentError,
          "#{what}: expected a function of no argument or of the lease, got: #{inspect(fun)}"
  end

  @acquire_defaults [
    timeout: 5000,
    lease: 5000,
    retries: :infinity,
    retry_interval: 50,
    jitter: 50
  ]

  # Unknown or misspelled options and values of the wrong type or range
  # raise at once, naming the option and what was expected (instead of a
  # timeout or a no_quorum much later).
  defp validate_acquire_opts!(opts) do
    unless Keyword.keyword?(opts) do
      raise ArgumentError,
            "Locker.acquire/2: options must be a keyword list, got: #{inspect(opts)}"
    end

    value = Keyword.get_lazy(opts, :value, &self/0)

    opts =
      try do
        Keyword.validate!(Keyword.delete(opts, :value), @acquire_defaults)
      rescue
        e in ArgumentError ->
          reraise ArgumentError,
                  "Locker.acquire/2: #{Exception.message(e)}",
                  __STACKTRACE__
      end

    check_opt!(
      opts,
      :timeout,
      &(&1 == :infinity or (is_integer(&1) and &1 >= 0)),
      "a non-negative integer of milliseconds or :infinity"
    )

    check_opt!(opts, :lease, &(is_integer(&1) and &1 > 0), "a positive integer of milliseconds")

    check_opt!(
      opts,
      :retries,
      &(&1 == :infinity or (is_integer(&1) and &1 >= 0)),
      "a non-negative integer or :infinity"
    )

    check_opt!(
      opts,
      :retry_interval,
      &(is_integer(&1) and &1 >= 0),
      "a non-negative integer of milliseconds"
    )

    check_opt!(
      opts,
      :jitter,
      &(is_integer(&1) and &1 >= 0),
      "a non-negative integer of milliseconds"
    )

    Keyword.put(opts, :value, value)
  end

  defp check_opt!(opts, name, ok?, expected) do
    value = Keyword.fetch!(opts, name)

    unless ok?.(value) do
      raise ArgumentError,
            "Locker.acquire/2: option #{inspect(name)} must be #{expected}, got: #{inspect(value)}"
    end
  end
end
