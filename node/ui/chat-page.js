// /chat: the widget on its own page. `?queue=<id>` picks the queue.
import { mount } from "./widget.js";

const params = new URLSearchParams(location.search);
mount(document.getElementById("parley-chat"), { queue: params.get("queue") || undefined });
