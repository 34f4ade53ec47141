// Chat page client: socket.io with its default transports (long-polling, then
// the upgrade to WebSocket); the barrel worker routes every request of a
// session to the worker holding it, whichever worker accepted the connection.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const status = $("status");
  const log = $("log");
  const nickInput = $("nick");
  const roomInput = $("room");
  const leaveButton = $("leave");
  const textInput = $("text");
  const sendButton = $("send");

  if (typeof io !== "function") {
    status.textContent = "socket.io client missing: run `npm ci` in the repository root";
    return;
  }

  const socket = io(); // long-polling first, then WebSocket: the barrel worker routes both
  let joined = null; // {room, nick} while in a room

  function line(className, parts) {
    const li = document.createElement("li");
    li.className = className;
    for (const [cls, text] of parts) {
      const span = document.createElement("span");
      if (cls) span.className = cls;
      span.textContent = text; // never innerHTML: messages come from other people
      li.appendChild(span);
    }
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.appendChild(li);
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function setJoined(value) {
    joined = value;
    leaveButton.disabled = !value;
    textInput.disabled = sendButton.disabled = !value;
    textInput.placeholder = value ? `message to #${value.room}` : "join a room to chat";
  }

  function join(room, nick) {
    socket.emit("join", { room, nick }, (reply) => {
      if (!reply.ok) {
        line("error", [[null, reply.error]]);
        return;
      }
      setJoined({ room: reply.room, nick: reply.nick });
      textInput.focus();
    });
  }

  function announce(a) {
    line("announcement", [[null, `${a.text} `], ["pid", `(announcer pid ${a.pid})`]]);
  }

  socket.on("hello", (me) => {
    status.className = "";
    status.textContent = `connected to worker pid ${me.pid}`;
    if (me.announcement) announce(me.announcement);
    // A reconnect may land on another worker, which knows nothing of our room.
    if (joined) join(joined.room, joined.nick);
  });

  socket.on("disconnect", (reason) => {
    status.className = "offline";
    status.textContent = `disconnected (${reason}), reconnecting…`;
  });

  socket.on("connect_error", (err) => {
    status.className = "offline";
    status.textContent = `cannot connect: ${err.message}`;
  });

  socket.on("chat", (msg) => {
    line("", [["nick", msg.nick], [null, `: ${msg.text} `], ["pid", `(via worker ${msg.pid})`]]);
  });

  // Only with example_confs/with_side_process.py, which runs the announcer.
  socket.on("announcement", announce);

  socket.on("system", (msg) => {
    line("system", [[null, `#${msg.room}: ${msg.text} `], ["pid", `(via worker ${msg.pid})`]]);
  });

  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    join(roomInput.value, nickInput.value);
  });

  leaveButton.addEventListener("click", () => {
    socket.emit("leave", null, () => setJoined(null));
  });

  $("say-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = textInput.value;
    if (!text.trim()) return;
    socket.emit("say", { text }, (reply) => {
      if (reply.ok) textInput.value = "";
      else line("error", [[null, reply.error]]);
    });
  });
})();
