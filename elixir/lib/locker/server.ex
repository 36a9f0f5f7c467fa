defmodule Locker.Server do
  @moduledoc """
  `use Locker.Server` in place of `use GenServer` to start a GenServer with
  a cluster-wide `Locker.Registry` name (elixir_locker's API):

      defmodule MyServer do
        use Locker.Server, lease_length: 60_000

        @impl true
        def init(args), do: {:ok, args}

        @impl true
        def handle_call(:ping, _from, state), do: {:reply, :pong, state}
      end

      {:ok, pid} = MyServer.start_link([], name: "my_server")
      GenServer.call({:via, Locker.Registry, "my_server"}, :ping)  # from any node

  It injects:

    * `start(args, opts \\\\ [])` and `start_link(args, opts \\\\ [])`: with
      `name: name` in `opts` the process is registered as
      `{:via, Locker.Registry, name}` (and, as in elixir_locker, `name: name`
      is put in `args` when `args` is a keyword list); without a name it starts
      unregistered. Other options go to `GenServer.start/3`;
    * `terminate/2`, which calls `Locker.Registry.unregister/0` (except
      when the process stops for losing its name); overridable, and
      `super(reason, state)` keeps working;
    * a `handle_info/2` clause that stops the server with the reason
      `{:shutdown, {:locker_name_lost, name}}` when it traps exits and the
      keeper gives its name up (see `Locker.Registry`): a server that
      does not trap exits gets that exit signal directly;
    * a `handle_info/2` clause for elixir_locker's
      `{:"$locker_extend_lease", key, value}` message: it extends the lease
      by `:lease_length` (default 5000) and schedules the next extension
      `:lease_length - :lease_threshold` (default 500) ms later, or stops
      the server with the error. Your own `handle_info/2` clauses get every
      other message.

  The name is kept alive by `Locker.Registry.Keeper` and released as soon
  as the process exits, whatever the reason; `terminate/2` only releases it
  earlier on a clean stop. Nothing sends `:"$locker_extend_lease"` any more
  (elixir_locker's registry did); the clause is there for code that does.
  """

  @doc false
  defmacro __using__(opts) do
    quote location: :keep do
      use GenServer
      @locker_opts Locker.Server.__options__(unquote(opts), "use Locker.Server")
      @locker_lease_length @locker_opts[:lease_length]
      @locker_lease_threshold @locker_opts[:lease_threshold]
      @before_compile Locker.Server

      @doc "Starts the server, registered as `{:via, Locker.Registry, name}` with `name:` in `opts`."
      @spec start(term(), keyword()) :: GenServer.on_start()
      def start(args, opts \\ []) do
        {args, opts} = Locker.Server.__name__(args, opts)
        GenServer.start(__MODULE__, args, opts)
      end

      @doc "Starts and links the server, registered as `{:via, Locker.Registry, name}` with `name:` in `opts`."
      @spec start_link(term(), keyword()) :: GenServer.on_start()
      def start_link(args, opts \\ []) do
        {args, opts} = Locker.Server.__name__(args, opts)
        GenServer.start_link(__MODULE__, args, opts)
      end

      @impl true
      def handle_info(msg, state), do: Locker.Server.__unexpected__(__MODULE__, msg, state)

      @impl true
      def terminate(reason, _state) do
        Locker.Registry.__terminate__(reason)
      end

      defoverridable handle_info: 2, terminate: 2
    end
  end

  @doc false
  defmacro __before_compile__(_env) do
    quote location: :keep do
      defoverridable handle_info: 2

      # The keeper's exit signal, as a message when the server traps exits.
      def handle_info({:EXIT, _, {:shutdown, {:locker_name_lost, _}} = reason}, state),
        do: {:stop, reason, state}

      def handle_info({:"$locker_extend_lease", key, value}, state) do
        case Locker.Server.__extend__(key, value, @locker_lease_length, @locker_lease_threshold) do
          :ok -> {:noreply, state}
          error -> {:stop, error, state}
        end
      end

      def handle_info(msg, state), do: super(msg, state)
    end
  end

  @doc false
  # The options of `use Locker.Server` and `use Locker.Fsm`, checked when
  # the module compiles.
  @spec __options__(term(), String.t()) :: keyword()
  def __options__(opts, what) do
    unless Keyword.keyword?(opts) do
      raise ArgumentError, "#{what}: options must be a keyword list, got: #{inspect(opts)}"
    end

    opts =
      try do
        Keyword.validate!(opts, lease_length: 5000, lease_threshold: 500)
      rescue
        e in ArgumentError ->
          reraise ArgumentError, "#{what}: #{Exception.message(e)}", __STACKTRACE__
      end

    unless is_integer(opts[:lease_length]) and opts[:lease_length] > 0 do
      raise ArgumentError,
            "#{what}: :lease_length must be a positive integer of milliseconds, " <>
              "got: #{inspect(opts[:lease_length])}"
    end

    unless is_integer(opts[:lease_threshold]) and opts[:lease_threshold] >= 0 do
      raise ArgumentError,
            "#{what}: :lease_threshold must be a non-negative integer of milliseconds, " <>
              "got: #{inspect(opts[:lease_threshold])}"
    end

    opts
  end

  @doc false
  # The start options of Locker.Server, Fsm and Statem processes: a
  # keyword list (checked here; the values by GenServer and friends).
  @spec __opts__!(term(), String.t()) :: keyword()
  def __opts__!(opts, what) do
    if Keyword.keyword?(opts) do
      opts
    else
      raise ArgumentError, "#{what}: options must be a keyword list, got: #{inspect(opts)}"
    end
  end

  @doc false
  @spec __name__(term(), keyword()) :: {term(), keyword()}
  def __name__(args, opts) do
    case Keyword.pop(__opts__!(opts, "start/2 (use Locker.Server)"), :name) do
      {nil, opts} ->
        {args, opts}

      {name, opts} ->
        name = unwrap(name)
        args = if Keyword.keyword?(args), do: Keyword.put(args, :name, name), else: args
        {args, Keyword.put(opts, :name, {:via, Locker.Registry, name})}
    end
  end

  @doc false
  @spec unwrap(term()) :: term()
  def unwrap({:via, Locker.Registry, name}), do: name
  def unwrap(name), do: name

  @doc false
  # elixir_locker's extension: extend now, schedule the next one.
  @spec __extend__(term(), term(), pos_integer(), non_neg_integer()) :: :ok | {:error, :no_quorum}
  def __extend__(key, value, lease_length, lease_threshold) do
    case :locker.extend_lease(key, value, lease_length) do
      :ok ->
        Process.send_after(
          self(),
          {:"$locker_extend_lease", key, value},
          max(lease_length - lease_threshold, 0)
        )

        :ok

      error ->
        error
    end
  end

  @doc false
  # What GenServer's default handle_info/2 does: log and go on.
  @spec __unexpected__(module(), term(), state, String.t()) :: {:noreply, state} when state: var
  def __unexpected__(module, msg, state, callback \\ "handle_info/2") do
    proc =
      case Process.info(self(), :registered_name) do
        {_, []} -> self()
        {_, name} -> name
      end

    :logger.error(
      ~c"~p ~p received unexpected message in ~ts: ~p~n",
      [proc, module, callback, msg],
      %{domain: [:otp, :elixir], error_logger: %{tag: :error_msg}}
    )

    {:noreply, state}
  end
end
