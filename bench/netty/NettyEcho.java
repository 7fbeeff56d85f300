/*
 * NettyEcho.java - the benchmark's echo server on Netty 4.1 (NIO
 * transport), the JVM's usual way of writing such a server, for the
 * lines and length cells of bench/run-bench.  127.0.0.1 only.
 *
 *   usage: java -cp NETTY_JARS:DIR NettyEcho [-p port] [-m lines|length]
 *                                            [-x conns]
 *          java -cp NETTY_JARS:DIR NettyEcho -V   (prints Netty's version)
 *
 *   lines    LineBasedFrameDecoder (delimiter kept, so the echoed frame
 *            ends in "\r\n" as it came); each frame is written back;
 *   length   LengthFieldBasedFrameDecoder(1 GiB + 4, 0, 4, 0, 0): a 4-byte
 *            big-endian body length, the whole frame (header kept) is
 *            written back.
 *
 * Writes are flushed once per read burst, in channelReadComplete, as
 * Netty's own examples do.  One NioEventLoopGroup of one thread serves
 * the listener and every connection, as the C servers do on one event
 * loop (run-bench pins the whole JVM, JIT and GC threads included, to the
 * servers' CPU).  TCP_NODELAY on every connection, as the C servers set
 * it.  Netty's defaults otherwise (pooled buffers, adaptive read sizes).
 *
 * It prints "listening on 127.0.0.1:PORT" when ready; SIGTERM (and
 * SIGINT) end it through the JVM's shutdown hook, which prints "frames N"
 * on stderr; -x N exits the same way after N connections have closed.
 *
 * Built by bench/run-bench with javac against Debian's libnetty-java
 * (/usr/share/java/netty-{common,buffer,transport,codec,resolver}.jar)
 * into its work directory; the Netty rows are skipped when java, javac or
 * those jars are missing.
 */
import io.netty.bootstrap.ServerBootstrap;
import io.netty.channel.Channel;
import io.netty.channel.ChannelHandler;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.ChannelOption;
import io.netty.channel.ChannelPipeline;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.nio.NioEventLoopGroup;
import io.netty.channel.socket.SocketChannel;
import io.netty.channel.socket.nio.NioServerSocketChannel;
import io.netty.handler.codec.LengthFieldBasedFrameDecoder;
import io.netty.handler.codec.LineBasedFrameDecoder;

import java.net.InetSocketAddress;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicLong;

public final class NettyEcho {
	static final int LINE_MAX = 1 << 20;
	static final int FRAME_MAX = (1 << 30) + 4;

	static final AtomicLong frames = new AtomicLong();
	static final AtomicLong closed = new AtomicLong();
	static long exitAfter;
	static final CountDownLatch done = new CountDownLatch(1);

	/* Echo each frame; flush once the read burst is over. */
	@ChannelHandler.Sharable
	static final class Echo extends ChannelInboundHandlerAdapter {
		@Override
		public void channelRead(ChannelHandlerContext ctx, Object msg) {
			frames.incrementAndGet();
			ctx.write(msg);
		}

		@Override
		public void channelReadComplete(ChannelHandlerContext ctx) {
			ctx.flush();
		}

		@Override
		public void channelInactive(ChannelHandlerContext ctx) {
			if (exitAfter > 0 && closed.incrementAndGet() >= exitAfter)
				done.countDown();
			ctx.fireChannelInactive();
		}

		@Override
		public void exceptionCaught(ChannelHandlerContext ctx, Throwable t) {
			ctx.close(); /* a bad frame or a reset: drop the connection */
		}
	}

	static void usage() {
		System.err.println("usage: NettyEcho [-p port] [-m lines|length] [-x conns]");
		System.exit(2);
	}

	public static void main(String[] args) throws Exception {
		int port = 0;
		String mode = "lines";

		if (args.length == 1 && args[0].equals("-V")) {
			System.out.println(io.netty.util.Version.identify()
			    .get("netty-common").artifactVersion());
			return;
		}
		for (int i = 0; i < args.length; i++) {
			if (i + 1 >= args.length)
				usage();
			switch (args[i]) {
			case "-p": port = Integer.parseInt(args[++i]); break;
			case "-m": mode = args[++i]; break;
			case "-x": exitAfter = Long.parseLong(args[++i]); break;
			default: usage();
			}
		}
		if (!mode.equals("lines") && !mode.equals("length"))
			usage();
		final boolean lines = mode.equals("lines");
		final Echo echo = new Echo();
		final EventLoopGroup group = new NioEventLoopGroup(1);

		ServerBootstrap b = new ServerBootstrap();
		b.group(group, group)
		    .channel(NioServerSocketChannel.class)
		    .option(ChannelOption.SO_BACKLOG, 1024)
		    .option(ChannelOption.SO_REUSEADDR, true)
		    .childOption(ChannelOption.TCP_NODELAY, true)
		    .childHandler(new ChannelInitializer<SocketChannel>() {
			    @Override
			    public void initChannel(SocketChannel ch) {
				    ChannelPipeline p = ch.pipeline();
				    if (lines)
					    p.addLast(new LineBasedFrameDecoder(LINE_MAX, false, false));
				    else
					    p.addLast(new LengthFieldBasedFrameDecoder(FRAME_MAX, 0, 4, 0, 0));
				    p.addLast(echo);
			    }
		    });
		Channel server = b.bind(new InetSocketAddress("127.0.0.1", port)).sync().channel();
		Runtime.getRuntime().addShutdownHook(new Thread(() -> {
			group.shutdownGracefully(0, 1, java.util.concurrent.TimeUnit.SECONDS).awaitUninterruptibly();
			System.err.println("frames " + frames.get());
		}));
		InetSocketAddress a = (InetSocketAddress) server.localAddress();
		System.out.println("listening on 127.0.0.1:" + a.getPort());
		System.out.flush();
		done.await();
		System.exit(0); /* runs the shutdown hook */
	}
}
