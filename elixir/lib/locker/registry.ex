defmodule Locker.Registry do
  @moduledoc """
  A cluster-wide process registry on `locker`, for `:via` names:

      {:ok, pid} = GenServer.start_link(MyServer, [], name: {:via, Locker.Registry, "worker-1"})
      GenServer.call({:via, Locker.Registry, "worker-1"}, :ping)   # from any node
      Locker.Registry.whereis_name("worker-1")                     # => pid

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

  @doc """
  Registers `pid` under `name` cluster-wide: `:yes`, or `:no` when the
  name is held (or no quorum of masters answers). The keeper on `pid`'s
  node then keeps the name alive until `pid` exits or the name is
  unregistered. When `pid` is the caller, the name is also remembered for
  `unregister/0`.

  Exits with `{:no_registry_keeper, node}` (after releasing the name) when
  `pid`'s node runs no `Locker.Registry.Keeper`, i.e. no `locker`
  application.
  """
  @spec register_name(term(), pid()) :: :yes | :no
  def register_name(name, pid) when is_pid(pid) do
    started = System.monotonic_time()
    result = do_register(name, pid)
    duration = System.monotonic_time() - started

    Telemetry.execute([:registry, :register], %{duration: duration}, %{
      name: name,
      pid: pid,
      result: result
    })

    result
  end

  # A lock can fail with the name free: registrations of the same name
  # racing (split votes), or a promise of another operation. Retried a
  # few times, briefly, while the name is seen free.
  defp do_register(name, pid, attempts \\ 3) do
    conf = Config.registry()
    sent = System.monotonic_time(:millisecond)

    case :locker.lock(name, pid, conf.lease) do
      {:ok, _w, _votes, _commits} ->
        # The masters hold it `lease` ms from when they got the request.
        remaining = sent + conf.lease - System.monotonic_time(:millisecond)

        if remaining <= conf.margin do
          # So slow a lock that the keeper would give the name up at once.
          _ = release_owned(name, pid)
          :no
        else
          watch(name, pid, remaining)
        end

      {:error, :no_quorum} when attempts > 1 ->
        case owner(name) do
          :error ->
            Process.sleep(:rand.uniform(4))
            do_register(name, pid, attempts - 1)

          {:ok, holder} when is_pid(holder) and node(holder) == node() ->
            # A supervisor restarting a named child can be faster than the
            # keeper's release of the dead one: release it here.
            if Process.alive?(holder) do
              :no
            else
              _ = release_owned(name, holder)
              do_register(name, pid, attempts - 1)
            end

          {:ok, _} ->
            :no
        end

      {:error, :no_quorum} ->
        :no
    end
  end

  defp watch(name, pid, remaining) do
    case Keeper.watch(name, pid, remaining) do
      :ok ->
        if pid == self(), do: Process.put(@name_key, name)
        :yes

      {:error, reason} ->
        _ = release_owned(name, pid)
        exit({reason, node(pid)})
    end
  end

  @doc """
  Releases `name` cluster-wide, whoever holds it, and stops its keeper from
  extending it. Always `:ok`.
  """
  @spec unregister_name(term()) :: :ok
  def unregister_name(name) do
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
    case Process.delete(@name_key) do
      nil -> :ok
      name -> unregister_owned(name, self())
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
    case :locker.dirty_read(name) do
      {:ok, pid} when is_pid(pid) and node(pid) != node() -> pid
      {:ok, pid} when is_pid(pid) -> if Process.alive?(pid), do: pid, else: :undefined
      {:ok, _} -> :undefined
      {:error, :not_found} -> if member?(), do: :undefined, else: Resolver.whereis(name)
    end
  end

  @doc """
  Sets what happens to the owner of `name` when it loses the name (see
  the module doc): `:exit` (the default, `:registry_on_lost`) or
  `:notify`. The owner may call it for its own name, in `init/1` for
  instance. `{:error, :not_registered}` when `name` is not held by a live
  process whose keeper answers.
  """
  @spec on_lost(term(), :exit | :notify) :: :ok | {:error, :not_registered}
  def on_lost(name, action) when action in [:exit, :notify] do
    case owner(name) do
      {:ok, pid} when is_pid(pid) -> Keeper.set_action(name, pid, action)
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
    if is_pid(value), do: Keeper.unwatch(name, value)
    _ = release_owned(name, value)

    if value == self() and Process.get(@name_key) == name do
      Process.delete(@name_key)
    end

    duration = System.monotonic_time() - started
    Telemetry.execute([:registry, :unregister], %{duration: duration}, %{name: name, pid: value})
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
        if member?() do
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
  end

  @doc false
  # Whether this node stores names (a master or a replica).
  @spec member?() :: boolean()
  def member? do
    {masters, replicas, _w} = :locker.get_meta()
    node() in masters or node() in replicas
  catch
    :throw, {:locker, :no_such_meta_key} -> false
  end
end
