defmodule Locker.Config do
  @moduledoc """
  Reads the `:locker` application environment, with defaults.

  | key | default | used by |
  | --- | --- | --- |
  | `:autostart` | `true` | `Locker` (application): start the `locker` server |
  | `:registry_autostart` | `true` | `Locker` (application): start the registry's processes (`Locker.Registry.child_spec/1`) |
  | `:masters` | `:auto` | the `locker` server: a list of nodes, or `:auto` (see below) |
  | `:cluster_size` | none | `:auto`: how many nodes the cluster is expected to have |
  | `:leave_grace_ms` | `30000` ms | `:auto`: how long a master may be gone before it is removed |
  | `:tick_ms` | `1000` ms | `:auto`: how often nodes exchange their views |
  | `:replicas` | `[]` | the `locker` server |
  | `:groups` | unset | cluster mode: keys spread over quorum groups, `[%{id: 1, masters: [...], w: 2}, ...]` (`:locker_groups`; the README's "Cluster mode"); `:masters` must then be unset |
  | `:quorum` (or `:w`) | a majority of the masters | the `locker` server |
  | `:lease_expire_interval` | `1000` ms | the `locker` server's lease sweep |
  | `:lock_expire_interval` | `1000` ms | the `locker` server's promise sweep |
  | `:push_trans_log_interval` | `100` ms | the `locker` server's replication push |
  | `:registry_lease` | `5000` ms | `Locker.Registry`: lease of a registered name |
  | `:registry_extend_interval` | `registry_lease` div 3 | `Locker.Registry.Keeper`: extend period |
  | `:registry_margin` | `registry_lease` div 5, at least 100 ms, at most half the lease | `Locker.Registry.Keeper`: how long before its lease could run out an owner that could not extend it is stopped |
  | `:registry_on_lost` | `:exit` | `Locker.Registry.Keeper`: `:exit` stops an owner that lost its name, `:notify` only sends it `{:locker_name_lost, name}` |

  `:quorum` is elixir_locker's key; `:w` is the Erlang application's. When
  both are set, `:quorum` wins. It must be a positive integer: 0, which was
  elixir_locker's default and made every lock succeed without a vote, is
  refused. Mutual exclusion needs a majority (2W > number of masters).

  With `masters: :auto` (the default when no masters are configured) the
  masters follow the connected nodes that run `locker` in this mode
  (`:locker_auto`; see the README, "Clusters"). A distributed node then
  needs `:cluster_size` (or a minimum `:quorum`): it starts alone with the
  quorum of that size, which it cannot reach alone, so it grants nothing
  (`{:error, :no_quorum}`, and a log line says why) until a quorum of the
  expected nodes is connected. A node that is not distributed
  (`Node.alive?()` false) can never meet a peer: it is its own single
  master (W = 1 unless `:quorum` says otherwise).

  Every key is checked when the application starts (`check/0`): with a
  bad one it does not start, and logs one message per bad key, naming the
  key, its value and what was expected. `masters` and `replicas` naming
  other nodes need a distributed node (`--name` or `--sname`).

  The registry's timing is checked when `Locker.Registry.Keeper` starts
  (so the application refuses to start with a bad one), by `registry/1`:
  `:registry_margin` at least the clock drift allowance of the lease (1% +
  2 ms) and below the lease, `:registry_extend_interval` below
  `registry_lease - registry_margin` (else every name would be lost
  between two extensions).
  """

  @typedoc "Options of the `locker` server (keys as in the application environment)."
  @type server_opts :: [
          masters: [node()] | :auto,
          cluster_size: pos_integer(),
          leave_grace_ms: non_neg_integer(),
          tick_ms: pos_integer(),
          replicas: [node()],
          quorum: pos_integer(),
          w: pos_integer(),
          lease_expire_interval: pos_integer(),
          lock_expire_interval: pos_integer(),
          push_trans_log_interval: pos_integer()
        ]

  @typedoc "The resolved configuration of a `locker` server."
  @type server :: %{
          masters: [node()],
          replicas: [node()],
          w: pos_integer(),
          w_default?: boolean(),
          args: [pos_integer()],
          auto: map() | nil,
          groups: [map()] | nil
        }

  @doc """
  Resolves the `locker` server's configuration: `opts` first, then the
  application environment, then the defaults.
  """
  @spec server(keyword()) :: server()
  def server(opts \\ []) do
    check_server_opts!(opts)
    get = fn key, default -> Keyword.get(opts, key, env(key, default)) end

    case get.(:groups, nil) do
      nil -> server_one_group(get)
      groups -> server_groups(groups, get)
    end
  end

  # Cluster mode (`:locker_groups`): this node's own group's masters,
  # replicas and W (no masters when it holds no group).
  defp server_groups(groups, get) do
    {masters, replicas, w} = :locker_groups.own_view(groups)

    %{
      masters: masters,
      replicas: replicas,
      w: w,
      w_default?: false,
      auto: nil,
      groups: groups,
      args: [
        w,
        get.(:lease_expire_interval, 1000),
        get.(:lock_expire_interval, 1000),
        get.(:push_trans_log_interval, 100)
      ]
    }
  end

  defp server_one_group(get) do
    masters = get.(:masters, nil) || :auto
    replicas = get.(:replicas, [])
    w = get.(:quorum, nil) || get.(:w, nil)

    unless w == nil or (is_integer(w) and w > 0) do
      raise ArgumentError,
            "locker: the quorum (:quorum or :w) must be a positive integer, got: #{inspect(w)} " <>
              "(elixir_locker's default 0 let every lock succeed; leave it unset for a majority)"
    end

    unless masters == :auto or
             (is_list(masters) and masters != [] and Enum.all?(masters, &is_atom/1)) do
      raise ArgumentError,
            "locker: :masters must be :auto or a non-empty list of node names, got: #{inspect(masters)}"
    end

    {masters, w, auto} = auto(masters, w, get)

    %{
      masters: masters,
      replicas: replicas,
      w: w || majority(masters),
      w_default?: w == nil,
      auto: auto,
      groups: nil,
      args: [
        w || majority(masters),
        get.(:lease_expire_interval, 1000),
        get.(:lock_expire_interval, 1000),
        get.(:push_trans_log_interval, 100)
      ]
    }
  end

  # Automatic membership: checked options for :locker_auto, and the
  # configuration the node starts with (alone).
  defp auto(:auto, w, get) do
    if Node.alive?() do
      env = %{
        replicas: get.(:replicas, []),
        cluster_size: get.(:cluster_size, nil),
        w: w,
        leave_grace_ms: get.(:leave_grace_ms, 30_000),
        tick_ms: get.(:tick_ms, 1000)
      }

      case :locker_auto.options(env) do
        {:ok, auto} ->
          {[node()], :locker_auto.initial_w(auto), auto}

        {:error, {:bad_app_env, :cluster_size, :undefined, _}} ->
          raise ArgumentError,
                "locker: masters: :auto (the default) needs :cluster_size, the number of nodes " <>
                  "the cluster is expected to have (a node must not grant locks alone before it " <>
                  "met its peers), or a minimum :quorum; or list the :masters"

        {:error, {:bad_app_env, key, value, expected}} ->
          raise ArgumentError,
                "locker: :#{key} must be #{expected}, got: #{inspect(value)}"
      end
    else
      # Not distributed: no peer can ever connect.
      {[node()], w || 1, nil}
    end
  end

  defp auto(masters, w, _get), do: {masters, w, nil}

  # Options of the `locker` server (`Locker.start_link/1`, `{Locker, opts}`).
  @server_keys [
    :groups,
    :masters,
    :replicas,
    :quorum,
    :w,
    :lease_expire_interval,
    :lock_expire_interval,
    :push_trans_log_interval,
    :cluster_size,
    :leave_grace_ms,
    :tick_ms
  ]

  defp check_server_opts!(opts) do
    unless Keyword.keyword?(opts) do
      raise ArgumentError,
            "locker: the server's options must be a keyword list, got: #{inspect(opts)}"
    end

    case Keyword.keys(opts) -- @server_keys do
      [] ->
        :ok

      unknown ->
        raise ArgumentError,
              "locker: unknown server options #{inspect(unknown)} (known: #{inspect(@server_keys)})"
    end

    case :locker_config.check(Map.new(opts)) do
      :ok -> :ok
      {:error, problems} -> raise ArgumentError, Enum.join(messages(problems, "option"), "\n")
    end
  end

  @doc """
  Checks the whole `:locker` application environment (every key of
  `:locker_config.keys/0`, and the registry's timing, see `registry/1`):
  `:ok`, or `{:error, messages}` with one message per bad key, naming the
  key, its value and what was expected. The application refuses to start
  with `{:bad_config, messages}` (and logs each message) when it is not
  `:ok`.
  """
  @spec check() :: :ok | {:error, [String.t()]}
  def check do
    keys =
      case :locker_config.check_env() do
        :ok -> []
        {:error, problems} -> messages(problems, "application environment")
      end

    registry =
      if keys == [] do
        try do
          _ = registry()
          []
        rescue
          e in ArgumentError -> [Exception.message(e)]
        end
      else
        []
      end

    # The server's configuration as a whole (masters: :auto needs a
    # cluster size on a distributed node).
    server =
      if keys == [] and autostart?() do
        try do
          _ = server([])
          []
        rescue
          e in ArgumentError -> [Exception.message(e)]
        end
      else
        []
      end

    case keys ++ registry ++ server do
      [] -> :ok
      messages -> {:error, messages}
    end
  end

  # In Elixir's syntax (the Erlang application's are in Erlang's).
  defp messages(problems, what) do
    for {key, value, expected} <- problems do
      "locker: bad #{what}: #{key} = #{inspect(value)}: expected #{expected}"
    end
  end

  @doc "A majority of `masters`: `div(length(masters), 2) + 1`."
  @spec majority([node()]) :: pos_integer()
  def majority(masters), do: div(length(Enum.uniq(masters)), 2) + 1

  @typedoc "The registry's timing and policy, resolved and checked (see `registry/1`)."
  @type registry :: %{
          lease: pos_integer(),
          extend_interval: pos_integer(),
          margin: pos_integer(),
          on_lost: :exit | :notify
        }

  @doc "Lease of a name registered through `Locker.Registry`, in ms."
  @spec registry_lease() :: pos_integer()
  def registry_lease, do: env(:registry_lease, 5000)

  @doc "How often `Locker.Registry.Keeper` extends the leases of its names, in ms."
  @spec registry_extend_interval() :: pos_integer()
  def registry_extend_interval do
    env(:registry_extend_interval, nil) || max(div(registry_lease(), 3), 1)
  end

  @doc """
  How long before a name's lease could run out on the masters its owner
  is stopped (or notified) when the lease could not be extended, in ms.
  """
  @spec registry_margin() :: pos_integer()
  def registry_margin, do: env(:registry_margin, nil) || default_margin(registry_lease())

  @doc "What the keeper does to an owner that lost its name: `:exit` (default) or `:notify`."
  @spec registry_on_lost() :: :exit | :notify
  def registry_on_lost, do: env(:registry_on_lost, :exit)

  @doc """
  The registry's timing and policy from `opts` (keys `:registry_lease`,
  `:registry_extend_interval`, `:registry_margin`, `:registry_on_lost`),
  then the application environment, then the defaults. Raises
  `ArgumentError` when they cannot keep the owner's view of a name within
  its lease on the masters (see the module doc).
  """
  @spec registry(keyword()) :: registry()
  def registry(opts \\ []) do
    get = fn key, default -> Keyword.get(opts, key, env(key, default)) end
    lease = get.(:registry_lease, 5000)

    unless is_integer(lease) and lease > 0 do
      raise ArgumentError,
            "locker: :registry_lease must be a positive integer (ms), got: #{inspect(lease)}"
    end

    margin = get.(:registry_margin, nil) || default_margin(lease)
    interval = get.(:registry_extend_interval, nil) || max(div(lease, 3), 1)
    on_lost = get.(:registry_on_lost, :exit)
    drift = drift_allowance(lease)

    unless is_integer(margin) and margin >= drift and margin < lease do
      raise ArgumentError,
            "locker: :registry_margin must be an integer from #{drift} (1% + 2 ms of the lease, " <>
              "for clock drift) to below the lease (#{lease} ms), got: #{inspect(margin)}"
    end

    unless is_integer(interval) and interval > 0 and interval < lease - margin do
      raise ArgumentError,
            "locker: :registry_extend_interval must be a positive integer below " <>
              ":registry_lease - :registry_margin (#{lease - margin} ms), got: #{inspect(interval)}"
    end

    unless on_lost in [:exit, :notify] do
      raise ArgumentError,
            "locker: :registry_on_lost must be :exit or :notify, got: #{inspect(on_lost)}"
    end

    %{lease: lease, extend_interval: interval, margin: margin, on_lost: on_lost}
  end

  # A fifth of the lease, at least 100 ms (a loaded node's scheduling
  # delays), at most half of it (room for extensions).
  defp default_margin(lease), do: max(min(max(div(lease, 5), 100), div(lease, 2)), 1)

  # As `Locker.Lease`: 1% of the lease plus 2 ms.
  defp drift_allowance(lease), do: div(lease, 100) + 2

  @doc "Whether the application starts the registry's processes itself (`Locker.Registry.child_spec/1`)."
  @spec registry_autostart?() :: boolean()
  def registry_autostart?, do: env(:registry_autostart, true) == true

  @doc "Whether the application starts the `locker` server itself."
  @spec autostart?() :: boolean()
  def autostart?, do: env(:autostart, true) == true

  @doc """
  The warning to log when the application environment of elixir_locker
  (`config :elixir_locker, ...`) is set: it is not read (this library
  reads `config :locker`, with the same keys). `nil` when there is none.
  """
  @spec legacy_env_warning() :: String.t() | nil
  def legacy_env_warning do
    case Application.get_all_env(:elixir_locker) do
      [] ->
        nil

      env ->
        "locker: `config :elixir_locker` is not read (keys #{inspect(Keyword.keys(env))}): " <>
          "move them to `config :locker` (same keys; :quorum is accepted)"
    end
  end

  defp env(key, default), do: Application.get_env(:locker, key, default)
end
