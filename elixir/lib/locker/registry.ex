defmodule Locker.Registry do
  @moduledoc """
  A cluster-wide process registry on `locker`, for `:via` names:

      {:ok, pid} = Agent.start_link(fn -> 0 end, name: {:via, Locker.Registry, "worker-1"})
      Agent.get({:via, Locker.Registry, "worker-1"}, & &1)    # from any node
      Locker.Registry.whereis_name("worker-1")               # => pid

  It implements the `:via` contract of `GenServer`, `:gen_statem`,
  `:gen_fsm`, `Agent`, `Task` and `:proc_lib` (`register_name/2`,
  `unregister_name/1`, `whereis_name/1`, `send/2`), and
  `Locker.Server`, `Locker.Fsm` and `Locker.Statem` start processes with
  it. The key of a name in `locker` is the name itself and the value is the
  owner's pid, as with elixir_locker, so both can share a cluster.

  ## Guarantees

    * **At most one owner.** `register_name/2` takes the name with
      `:locker.lock/3` for `:registry_lease` ms (application environment,
      default 5000): `:yes` only when a quorum W of the masters promised and
      stored it, `:no` when the name is held, by a live or a dead owner
      whose lease has not run out, or when no quorum answers. As long as W
      is a majority of the masters, no two `:yes` for one name overlap in
      time.
    * **Names live as long as their owner, with no code in the owner.** A
      keeper process on the owner's node (`Locker.Registry.Keeper`)
      monitors the owner and extends the lease every
      `:registry_extend_interval` ms (default: a third of the lease), off
      its own loop (the extension rounds run in a separate process, so
      deaths are handled at once even while masters are slow).
    * **Death releases the name at once.** When the owner exits, for any
      reason, `:kill` included, the keeper releases the name through
      `:locker.release/2`, which reaches every master and replica directly.
      On a loopback cluster the name is gone from `whereis_name/1` on every
      master and replica within a few milliseconds (the tests measure it;
      the target is 50 ms). A release that meets a concurrent extension
      round is retried until it succeeds or the name is no longer the dead
      owner's.
    * **A dead node's names free at lease expiry**: when the owner's node
      dies or is cut off, nothing extends its leases any more and every
      other node drops the names at most `:registry_lease` ms after the
      last extension. Until then they resolve to the unreachable pid.
    * **An owner that cannot keep its name stops before another can
      take it.** The keeper counts each name's validity from before the
      call of its last successful extension (or of the registration):
      the masters hold the lease at least `:registry_lease` ms from then.
      When no extension succeeds until `:registry_margin` ms before that
      validity ends (the owner's node cut off from the quorum, the masters
      unreachable, a long pause), the owner gets the exit signal
      `{:shutdown, {:locker_name_lost, name}}` (an owner that traps exits
      gets it as a message and is killed if still alive half a margin
      later; `Locker.Server` and `Locker.Fsm` stop on that message with
      that reason). So the old owner is gone before the masters let
      another process register the name: by about the margin, as long as
      clock rates differ by less than it covers (see `Locker.Config`).
      The same happens at once when an extension finds the name held by
      another process or by nobody. `:registry_on_lost` `:notify` (or
      `on_lost/2` for one name) only sends the owner
      `{:locker_name_lost, name}`: it then runs on without the name, and
      until it stops, two processes may act as the owner once another
      registers the name. `unregister_name/1` called from elsewhere stops
      neither: the owner just no longer holds the name.
    * If the keeper itself crashes, its supervisor restarts it and the new
      keeper adopts the names of the old one (`Locker.Registry.Table`):
      their owners keep their names and their deadlines.
      `Locker.Registry.Keeper.remaining/2` tells an owner how long it
      certainly holds its name.

  ## Reads

  `whereis_name/1` (and so every `GenServer.call/2` and `send/2` by name)
  answers on every node running the application, with the semantics of a
  dirty read on a master:

    * on a master or a replica it reads this node's `locker` store,
      without a message: about the cost of an ETS lookup. A replica sees a
      new name after the masters' next log push
      (`:push_trans_log_interval`, 100 ms);
    * on any other node it asks a master through
      `Locker.Registry.Resolver` and caches the answer while the master
      watches the name for it: one round trip the first time, an ETS
      lookup afterwards (see `Locker.Registry.Resolver` for the costs). A
      cached owner is dropped when it dies, when the master sees the name
      released or expired, and when that master goes down;
    * a pid of another node that has just died may be returned until this
      node learns of the death (the release or the `DOWN`); a pid of this
      node that has exited is never returned.

  ## Lookups, listings and metadata

  `lookup/1` and `meta/1` read one name as `whereis_name/1` does (a
  master's or replica's own store, else one master); `select/1`,
  `names/0` and `count/0` ask the keeper of every connected node for the
  names it holds (not a snapshot: see `select/1`), `keys/1` the keeper
  of one pid's node. A name can carry
  metadata, set when it is registered (`register/2` for the caller,
  `via/2` for a process started under a name) and readable from every
  node. A registration without a quorum exits with
  `{:locker_no_quorum, name}` instead of answering `:no` (see
  `register_name/2`). `child_spec/1` starts the registry's processes in
  an application's own tree (`registry_autostart: false`).

  ## Differences from elixir_locker

    * Names are kept alive and released by the keeper; elixir_locker relied
      on the owner handling `{:"$locker_extend_lease", name, pid}` and on
      `terminate/2`, so a killed owner kept its name for the whole lease.
    * `send/2` exits with `{:badarg, {name, msg}}` for an unknown name, as
      the `:via` contract requires (elixir_locker returned the tuple).
    * `unregister/0` releases the caller's name only if the caller still
      holds it.
  """

  require Logger
  alias Locker.{Config, Telemetry}
  alias Locker.Registry.{Keeper, Resolver}

  @name_key :"$locker_name"
  @meta_tag :"$locker_name"
  @value_key :"$locker_name_value"

  @doc """
  Registers `pid` under `name` cluster-wide: `:yes`, or `:no` when the
  name is held by another process. The keeper on `pid`'s node then keeps
  the name alive until `pid` exits or the name is unregistered. When `pid`
  is the caller, the name is also remembered for `unregister/0`.
  `{Locker.Registry, name, meta}` (see `via/2`) registers `name` with
  `meta`.

  Exits, instead of answering `:no`:

    * with `{:locker_no_quorum, name}` when no holder of the name is seen
      but the masters did not grant it (fewer than W answered: masters
      down or cut off, or the name contended). Logged as a warning, with
      the telemetry result `:no_quorum`. A process started with
      `name: {:via, Locker.Registry, name}` then fails to start with that
      reason (instead of `{:error, {:already_started, :undefined}}`);
    * with `{:no_registry_keeper, node}` (after releasing the name) when
      `pid`'s node runs no `Locker.Registry.Keeper`, i.e. no `locker`
      application, and with `{:node_unreachable, node}` when that node
      cannot be reached;
    * raises `Locker.NotStartedError` when `locker` never started on this
      node.
  """
  @spec register_name(term(), pid()) :: :yes | :no
  def register_name(name, pid) when is_pid(pid) do
    {name, meta} = unwrap(name)
    started = System.monotonic_time()
    result = Locker.started!(fn -> do_register(name, pid, value(pid, meta)) end)
    duration = System.monotonic_time() - started

    Telemetry.execute([:registry, :register], %{duration: duration}, %{
      name: name,
      pid: pid,
      result: result
    })

    case result do
      :no_quorum ->
        Logger.warning(
          "locker registry: #{inspect(pid)} could not register #{inspect(name)}: " <>
            "no holder seen, but no quorum of masters granted it"
        )

        exit({:locker_no_quorum, name})

      yes_or_no ->
        yes_or_no
    end
  end

  def register_name(_name, pid) do
    raise ArgumentError,
          "Locker.Registry.register_name/2: expected a pid as the owner, got: #{inspect(pid)}"
  end

  @doc """
  Registers the calling process under `name` with `meta` (any term,
  `nil` for none), readable from every node with `lookup/1` and
  `meta/1`: `:ok`, `{:error, {:already_registered, pid}}` when another
  process holds the name (`pid` is `:undefined` when its owner is not
  known here), or `{:error, :no_quorum}` when no holder is seen but no
  quorum of masters granted it.

  A name registered with metadata is stored as the value
  `{:"$locker_name", pid, meta}` instead of the bare pid: nodes of this
  project resolve it as usual, elixir_locker nodes sharing the cluster
  do not see its owner. Without metadata the value is the pid, as always.

      iex> Locker.Registry.register({:doc, :meta}, %{shard: 3})
      :ok
      iex> Locker.Registry.meta({:doc, :meta})
      {:ok, %{shard: 3}}
      iex> Locker.Registry.unregister()
      :ok
  """
  @spec register(term(), term()) ::
          :ok | {:error, {:already_registered, pid() | :undefined} | :no_quorum}
  def register(name, meta \\ nil) do
    case register_name({__MODULE__, name, meta}, self()) do
      :yes -> :ok
      :no -> {:error, {:already_registered, whereis_name(name)}}
    end
  catch
    :exit, {:locker_no_quorum, ^name} -> {:error, :no_quorum}
  end

  @doc """
  The `:via` tuple that registers `name` with `meta` when a process
  starts under it (`GenServer.start_link(M, arg, name: Locker.Registry.via(name, meta))`):
  `{:via, Locker.Registry, {Locker.Registry, name, meta}}`. Calls and
  sends by that tuple, or by `{:via, Locker.Registry, name}`, reach the
  same process.

      iex> Locker.Registry.via(:worker, %{role: :primary})
      {:via, Locker.Registry, {Locker.Registry, :worker, %{role: :primary}}}
  """
  @spec via(term(), term()) :: {:via, module(), {module(), term(), term()}}
  def via(name, meta), do: {:via, __MODULE__, {__MODULE__, name, meta}}

  # `{Locker.Registry, name, meta}` is `name` with metadata.
  defp unwrap({__MODULE__, name, meta}), do: {name, meta}
  defp unwrap(name), do: {name, nil}

  defp key({__MODULE__, name, _meta}), do: name
  defp key(name), do: name

  # The value stored under a name: the pid (as elixir_locker), or the pid
  # with metadata.
  defp value(pid, nil), do: pid
  defp value(pid, meta), do: {@meta_tag, pid, meta}

  @doc false
  # The owner in a stored value, or `:undefined` for a value that is not
  # a name's (a lock's).
  @spec owner_pid(term()) :: pid() | :undefined
  def owner_pid(pid) when is_pid(pid), do: pid
  def owner_pid({@meta_tag, pid, _meta}) when is_pid(pid), do: pid
  def owner_pid(_), do: :undefined

  @doc false
  # The metadata in a stored value (`nil` for a bare pid).
  @spec meta_of(term()) :: term()
  def meta_of({@meta_tag, pid, meta}) when is_pid(pid), do: meta
  def meta_of(_), do: nil

  # A lock can fail with the name free: registrations of the same name
  # racing (split votes), or a promise of another operation. Retried a
  # few times, briefly, while the name is seen free.
  defp do_register(name, pid, value, attempts \\ 3) do
    conf = Config.registry()
    sent = System.monotonic_time(:millisecond)

    case :locker.lock(name, value, conf.lease) do
      {:ok, _w, _votes, _commits} ->
        # The masters hold it `lease` ms from when they got the request.
        remaining = sent + conf.lease - System.monotonic_time(:millisecond)

        if remaining <= conf.margin do
          # So slow a lock that the keeper would give the name up at once.
          _ = release_owned(name, value)
          :no
        else
          watch(name, pid, value, remaining)
        end

      {:error, :no_quorum} when attempts > 1 ->
        case owner(name) do
          :error ->
            Process.sleep(:rand.uniform(4))
            do_register(name, pid, value, attempts - 1)

          {:ok, held} ->
            holder = owner_pid(held)

            # A supervisor restarting a named child can be faster than the
            # keeper's release of the dead one: release it here.
            if is_pid(holder) and node(holder) == node() and not Process.alive?(holder) do
              _ = release_owned(name, held)
              do_register(name, pid, value, attempts - 1)
            else
              :no
            end
        end

      {:error, :no_quorum} ->
        case owner(name) do
          :error -> :no_quorum
          {:ok, _} -> :no
        end
    end
  end

  defp watch(name, pid, value, remaining) do
    case Keeper.watch(name, pid, value, remaining) do
      :ok ->
        if pid == self() do
          Process.put(@name_key, name)
          Process.put(@value_key, value)
        end

        :yes

      {:error, reason} ->
        _ = release_owned(name, value)
        exit({reason, node(pid)})
    end
  end

  @doc """
  Releases `name` cluster-wide, whoever holds it, and stops its keeper from
  extending it. Always `:ok`.
  """
  @spec unregister_name(term()) :: :ok
  def unregister_name(name) do
    name = key(name)

    case owner(name) do
      {:ok, value} -> unregister_owned(name, value)
      :error -> :ok
    end
  end

  @doc """
  Releases the name the calling process registered for itself (as
  elixir_locker's `Locker.Server` does in `terminate/2`), if it still holds
  it. Always `:ok`.
  """
  @spec unregister() :: :ok
  def unregister do
    value = Process.delete(@value_key) || self()

    case Process.delete(@name_key) do
      nil -> :ok
      name -> unregister_owned(name, value)
    end
  end

  @doc """
  The pid registered under `name`, or `:undefined`: read from this node's
  `locker` store on a master or a replica (no message), else asked of a
  master and cached (`Locker.Registry.Resolver`). A pid of this node that
  has exited is never returned, even before the keeper has released its
  name.
  """
  @spec whereis_name(term()) :: pid() | :undefined
  def whereis_name(name) do
    name = key(name)

    case :locker.dirty_read(name) do
      {:ok, value} -> live(owner_pid(value))
      {:error, :not_found} -> if holds?(name), do: :undefined, else: Resolver.whereis(name)
    end
  end

  @doc """
  The owner of `name` with its metadata, as Elixir's `Registry.lookup/2`
  answers: `[{pid, meta}]` (`meta` is `nil` for a name registered
  without metadata), or `[]`.

  The same read as `whereis_name/1`: on a master or a replica this
  node's store, without a message; on any other node a dirty read on one
  master (`:locker.master_dirty_read/1`, one round trip, not cached). Not
  a quorum read: a name registered or released a moment ago may not be
  seen yet.
  """
  @spec lookup(term()) :: [{pid(), term()}]
  def lookup(name) do
    with {:ok, value} <- owner(key(name)),
         pid when is_pid(pid) <- live(owner_pid(value)) do
      [{pid, meta_of(value)}]
    else
      _ -> []
    end
  end

  @doc """
  The metadata of `name` (`register/2`, `via/2`): `{:ok, meta}` (`nil`
  when registered without), or `:error` when nobody holds it. Read as
  `lookup/1`.
  """
  @spec meta(term()) :: {:ok, term()} | :error
  def meta(name) do
    case lookup(name) do
      [{_pid, meta}] -> {:ok, meta}
      [] -> :error
    end
  end

  @doc """
  The names held on every node running the application, as
  `{name, pid, meta}` tuples selected by the match specification `spec`
  (as Elixir's `Registry.select/2`: the head matches `{name, pid, meta}`).

      Locker.Registry.select([{{:"$1", :"$2", :_}, [], [{{:"$1", :"$2"}}]}])   # [{name, pid}]

  **Consistency**: this node and every node of `Node.list/0` are asked at
  once (`:erpc.multicall/5`, 5 s) for the names their
  `Locker.Registry.Keeper` holds for live owners (a read of its table,
  no message to the keeper, no quorum). Each node answers with its
  state at the moment it answers: not a snapshot of the cluster. A name
  registered or released during the call may be missing or listed; the
  names of a node that does not answer in time, of a node not connected
  to this one, and of owners that are not BEAM processes of this project
  (a `lockerd` client, an elixir_locker node) are missing. During a
  partition, an owner cut off from the quorum is listed until its keeper
  gives its name up (see the module doc), so a name can be listed twice
  for the margin. `lookup/1` is the read for one name.
  """
  @spec select(:ets.match_spec()) :: [term()]
  def select(spec) do
    compiled =
      try do
        :ets.match_spec_compile(spec)
      rescue
        ArgumentError ->
          raise ArgumentError,
                "Locker.Registry.select/1: expected a match specification on {name, pid, meta}, " <>
                  "got: #{inspect(spec)}"
      end

    :ets.match_spec_run(entries(), compiled)
  end

  @doc """
  The names held on every node running the application: `select/1`
  returning the names (same consistency).
  """
  @spec names() :: [term()]
  def names, do: for({name, _pid, _meta} <- entries(), do: name)

  @doc """
  The names `pid` holds (as Elixir's `Registry.keys/2`), asked of the
  keeper of `pid`'s node (a read of its table, no quorum); `[]` when that
  node cannot be asked.
  """
  @spec keys(pid()) :: [term()]
  def keys(pid) when is_pid(pid) do
    for {name, ^pid, _meta} <- :erpc.call(node(pid), Keeper, :entries, [], 5000), do: name
  catch
    _, _ -> []
  end

  def keys(pid) do
    raise ArgumentError, "Locker.Registry.keys/1: expected a pid, got: #{inspect(pid)}"
  end

  @doc "How many names are held on every node running the application (as `select/1`)."
  @spec count() :: non_neg_integer()
  def count, do: length(entries())

  defp entries do
    nodes = [node() | Node.list()]

    nodes
    |> :erpc.multicall(Keeper, :entries, [], 5000)
    |> Enum.flat_map(fn
      {:ok, list} when is_list(list) -> list
      _ -> []
    end)
  end

  @doc """
  A child spec for the registry's processes (`Locker.Registry.Table`,
  `Locker.Registry.Keeper`, `Locker.Registry.Resolver`, under a supervisor
  registered as `Locker.Registry.Supervisor`), for applications that set
  `config :locker, registry_autostart: false` and start the registry in
  their own supervision tree: `children = [Locker.Registry]`. There are no
  options (the registry's timing is read from the application
  environment, see `Locker.Config`). One registry runs per node.
  """
  @spec child_spec([]) :: Supervisor.child_spec()
  def child_spec(opts) do
    %{
      id: __MODULE__,
      start: {__MODULE__, :start_link, [opts]},
      type: :supervisor
    }
  end

  @doc "Starts the registry's processes (see `child_spec/1`)."
  @spec start_link([]) :: Supervisor.on_start()
  def start_link(opts \\ []) do
    unless opts == [] do
      raise ArgumentError,
            "Locker.Registry.start_link/1 takes no options (the registry reads " <>
              "`config :locker`), got: #{inspect(opts)}"
    end

    Supervisor.start_link([Locker.Registry.Table, Keeper, Resolver],
      strategy: :one_for_one,
      name: Locker.Registry.Supervisor
    )
  end

  defp live(pid) when is_pid(pid) and node(pid) != node(), do: pid
  defp live(pid) when is_pid(pid), do: if(Process.alive?(pid), do: pid, else: :undefined)
  defp live(_), do: :undefined

  @doc """
  Sets what happens to the owner of `name` when it loses the name (see
  the module doc): `:exit` (the default, `:registry_on_lost`) or
  `:notify`. The owner may call it for its own name, in `init/1` for
  instance. `{:error, :not_registered}` when `name` is not held by a live
  process whose keeper answers.
  """
  @spec on_lost(term(), :exit | :notify) :: :ok | {:error, :not_registered}
  def on_lost(name, action) do
    unless action in [:exit, :notify] do
      raise ArgumentError,
            "Locker.Registry.on_lost/2: the action must be :exit or :notify, got: #{inspect(action)}"
    end

    name = key(name)

    with {:ok, value} <- owner(name),
         pid when is_pid(pid) <- owner_pid(value) do
      Keeper.set_action(name, pid, action)
    else
      _ -> {:error, :not_registered}
    end
  end

  @doc """
  Sends `msg` to the process registered under `name` and returns its pid;
  exits with `{:badarg, {name, msg}}` when no process is registered.
  """
  @spec send(term(), term()) :: pid()
  def send(name, msg) do
    case whereis_name(name) do
      :undefined ->
        exit({:badarg, {name, msg}})

      pid ->
        Kernel.send(pid, msg)
        pid
    end
  end

  defp unregister_owned(name, value) do
    started = System.monotonic_time()
    pid = owner_pid(value)
    if is_pid(pid), do: Keeper.unwatch(name, pid)
    _ = release_owned(name, value)

    if pid == self() and Process.get(@name_key) == name do
      Process.delete(@name_key)
      Process.delete(@value_key)
    end

    duration = System.monotonic_time() - started
    Telemetry.execute([:registry, :unregister], %{duration: duration}, %{name: name, pid: pid})
    :ok
  end

  @doc false
  # Releases `name` if `value` holds it. A release can meet the promise of
  # a concurrent operation on the same key (an extension round of the
  # keeper) and then fail without a quorum: retried, with a short backoff,
  # as long as `value` still holds the name and its lease may still run.
  @spec release_owned(term(), term()) :: :ok | {:error, :no_quorum}
  def release_owned(name, value) do
    deadline = System.monotonic_time(:millisecond) + Config.registry_lease()
    release_owned(name, value, deadline, 1)
  end

  defp release_owned(name, value, deadline, backoff) do
    case :locker.release(name, value) do
      {:ok, _w, _votes, _commits} ->
        :ok

      {:error, :no_quorum} ->
        if owner(name) == {:ok, value} and System.monotonic_time(:millisecond) < deadline do
          Process.sleep(backoff)
          release_owned(name, value, deadline, min(backoff * 2, 64))
        else
          {:error, :no_quorum}
        end
    end
  end

  @doc false
  # What `terminate` callbacks of Locker.Server, Fsm and Statem do: release
  # the caller's name, except when the keeper stopped it for losing the
  # name (a release could only wait for a quorum that is not there).
  @spec __terminate__(term()) :: :ok
  def __terminate__({:shutdown, {:locker_name_lost, _}}) do
    _ = Process.delete(@name_key)
    _ = Process.delete(@value_key)
    :ok
  end

  def __terminate__(_reason), do: unregister()

  @doc false
  # The value of `name`: from this node's store when it is a master or a
  # replica, else from a master.
  @spec owner(term()) :: {:ok, term()} | :error
  def owner(name) do
    case read_owner(name) do
      {:ok, value} -> {:ok, value}
      _ -> :error
    end
  end

  @doc false
  # `owner/1`, telling a name nobody holds from a master that did not answer.
  @spec read_owner(term()) :: {:ok, term()} | :not_found | :unreachable
  def read_owner(name) do
    case :locker.dirty_read(name) do
      {:ok, value} ->
        {:ok, value}

      {:error, :not_found} ->
        if holds?(name) do
          :not_found
        else
          case :locker.master_dirty_read(name) do
            {:ok, value} -> {:ok, value}
            {:error, :not_found} -> :not_found
            _ -> :unreachable
          end
        end
    end
  catch
    :throw, {:locker, :no_such_meta_key} -> :unreachable
    :error, {:locker, :not_started} -> :unreachable
  end

  @doc false
  # Whether this node stores `name` (a master or a replica of its group;
  # without cluster mode, of the cluster).
  @spec holds?(term()) :: boolean()
  def holds?(name), do: :locker.holds(name)
end
